"""`launchers.slurm` / `launchers.remote` stay functions after their submodules are imported (regression)."""

from __future__ import annotations

import importlib


def test_launcher_functions_survive_submodule_imports() -> None:
    import launchers

    importlib.import_module("launchers.slurm")
    importlib.import_module("launchers.remote")
    for _ in range(2):  # the first call used to replace the function by the module it imported
        assert callable(launchers.slurm) and callable(launchers.remote)
        assert launchers.slurm(ngpus=1).topology().gpus_per_node == 1
