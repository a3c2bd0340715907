"""Run argv-list pipelines locally or on a cluster. Knows nothing about fine-tuning.

    import launchers
    job = launchers.local(ngpus=2).run([Step("train", [...], log="train.log")], name="my-job")
"""

from __future__ import annotations

from typing import Any

# The submodules are loaded before the functions of the same names are defined: importing a submodule sets the
# package attribute to the module, so a lazy `from .slurm import ...` inside `slurm()` replaced the function with the
# module after its first call (`launchers.slurm(...)` then raised "'module' object is not callable").
from . import remote as _remote_module  # noqa: F401
from . import slurm as _slurm_module  # noqa: F401
from .base import Launcher, Topology
from .job import Job, JobFailed, JobState, Step, StepResult
from .local import LocalJob, LocalLauncher

__all__ = [
    "Job", "JobFailed", "JobState", "Launcher", "LocalJob", "LocalLauncher", "Step", "StepResult", "Topology",
    "by_name", "empty", "local", "remote", "slurm",
]  # fmt: skip


def by_name(name: str | None = None, **kwargs: Any) -> Launcher:
    """The one way from a launcher name to a launcher: 'local' / 'empty', 'slurm', 'remote' / 'auto' (None):
    SLURM when it can take jobs here, else local with a note why. ValueError for other names."""
    from .remote import LOCAL_NAMES, check_name
    from .remote import remote as auto
    from .slurm import SlurmLauncher

    name = check_name(name)
    if name in LOCAL_NAMES:
        return LocalLauncher(**kwargs)
    if name == "slurm":
        return SlurmLauncher(**kwargs)
    return auto(name, **kwargs)


def local(**kwargs: Any) -> LocalLauncher:
    """Run on this machine (see `LocalLauncher`)."""
    return LocalLauncher(**kwargs)


def empty(**kwargs: Any) -> LocalLauncher:
    """LazyLLM's name for the local launcher."""
    return LocalLauncher(**kwargs)


def slurm(**kwargs: Any) -> Launcher:
    """Submit to SLURM with sbatch (see `launchers.slurm.SlurmLauncher`)."""
    return by_name("slurm", **kwargs)


def remote(launcher: str | None = None, **kwargs: Any) -> Launcher:
    """SLURM when a scheduler is here and its controller answers, else local (see `launchers.remote`)."""
    from .remote import remote as auto

    return auto(launcher, **kwargs)
