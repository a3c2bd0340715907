"""`launchers.remote()`: the configured cluster launcher, or local when no scheduler is here (like submitit's
AutoExecutor).

    LAZYTUNE_DEFAULT_LAUNCHER=slurm   # also: auto / remote (the same: slurm when present), local / empty
    (unset: slurm when a scheduler is present, else local)
    launchers.remote(partition="debug", ngpus=1, time="1:00:00")

With slurm configured but no `sbatch` on PATH, the job runs locally and the options only SLURM understands are
dropped (one note on stderr says which).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .base import Launcher
from .local import LocalLauncher

ENV_VAR = "LAZYTUNE_DEFAULT_LAUNCHER"
DEFAULT = "slurm"
CLUSTER_NAMES = ("slurm", "auto", "remote")
LOCAL_NAMES = ("local", "empty")
# Options of launchers.slurm that a local run has no use for.
SLURM_ONLY = ("partition", "nnodes", "time", "cpus_per_task", "mem", "sbatch_args", "env_allow", "folder",
              "poll_seconds")  # fmt: skip


def scheduler_present(which: Callable[[str], str | None] = shutil.which) -> bool:
    """Whether SLURM's submission commands are on PATH (submitit looks for `srun`; we need `sbatch` too)."""
    return bool(which("sbatch")) and bool(which("scontrol"))


def resolve_name(
    launcher: str | None = None,
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """'slurm' or 'local': the asked or configured launcher, local when no scheduler is present."""
    environ = os.environ if environ is None else environ
    name = (launcher or environ.get(ENV_VAR) or DEFAULT).strip().lower()
    if name in LOCAL_NAMES:
        return "local"
    if name not in CLUSTER_NAMES:
        known = ", ".join((*CLUSTER_NAMES, *LOCAL_NAMES))
        source = "launcher=" if launcher else f"{ENV_VAR}="
        raise ValueError(f"{source}{name!r} is not a launcher this version knows (known: {known})")
    return "slurm" if scheduler_present(which) else "local"


def local_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Translate launchers.slurm options for launchers.local: (kwargs for local, names of the dropped options)."""
    out = dict(kwargs)
    unset = {"nnodes": 1}  # values that ask for nothing a local run lacks
    dropped = [k for k in SLURM_ONLY if k in out and out[k] not in (None, (), [], unset.get(k))]
    for k in SLURM_ONLY:
        out.pop(k, None)
    ntasks = out.pop("ntasks_per_node", None)
    if ntasks is not None:
        if out.get("nproc") not in (None, ntasks):
            raise ValueError("give ntasks_per_node or its alias nproc, not both")
        out["nproc"] = ntasks
    return out, dropped


def remote(launcher: str | None = None, **kwargs: Any) -> Launcher:
    """The configured cluster launcher (`launcher=` or LAZYTUNE_DEFAULT_LAUNCHER, default slurm) built with
    `kwargs`; a local launcher when no scheduler is present."""
    name = resolve_name(launcher)
    if name == "slurm":
        from .slurm import SlurmLauncher

        return SlurmLauncher(**kwargs)
    local, dropped = local_kwargs(kwargs)
    asked = (launcher or os.environ.get(ENV_VAR) or DEFAULT).strip().lower()
    if asked not in LOCAL_NAMES:
        note = f"; ignoring {', '.join(dropped)}" if dropped else ""
        print(f"lazytune: no SLURM scheduler found (sbatch not on PATH), running locally{note}", file=sys.stderr)
    return LocalLauncher(**local)
