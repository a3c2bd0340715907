"""`launchers.remote()`: SLURM when a scheduler is here and its controller answers, else local (like submitit's
AutoExecutor).

    launchers.remote(partition="debug", ngpus=1, time="1:00:00")
    launchers.remote("local")      # names: slurm, auto / remote (slurm when it answers), local / empty

SLURM is chosen only when `sbatch` and `scontrol` are on PATH and `scontrol ping` answers within 3 s; otherwise the
job runs locally, the options only SLURM understands are dropped, and one note on stderr says why.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .base import Launcher
from .local import LocalLauncher

CLUSTER_NAMES = ("slurm", "auto", "remote")
LOCAL_NAMES = ("local", "empty")
# Options of launchers.slurm that a local run has no use for.
SLURM_ONLY = ("partition", "nnodes", "time", "cpus_per_task", "mem", "sbatch_args", "env_allow", "env_allow_prefixes",
              "folder", "poll_seconds")  # fmt: skip


def scheduler_present(which: Callable[[str], str | None] = shutil.which) -> bool:
    """Whether SLURM's submission commands are on PATH (submitit looks for `srun`; we need `sbatch` too)."""
    return bool(which("sbatch")) and bool(which("scontrol"))


def _controller_problem() -> str | None:
    from .slurm import controller_problem

    return controller_problem()


def is_name(value: Any) -> bool:
    """Whether `value` is a launcher name (`remote("local")` names the launcher; another string is a partition)."""
    return isinstance(value, str) and value.strip().lower() in (*CLUSTER_NAMES, *LOCAL_NAMES)


def check_name(name: str | None, source: str = "launcher=") -> str:
    """The launcher name, normalised ('auto' when None); ValueError naming the known ones otherwise."""
    name = (name or "auto").strip().lower()
    if name not in (*CLUSTER_NAMES, *LOCAL_NAMES):
        known = ", ".join((*CLUSTER_NAMES, *LOCAL_NAMES))
        raise ValueError(f"{source}{name!r} is not a launcher this version knows (known: {known})")
    return name


def why_not_slurm(
    which: Callable[[str], str | None] = shutil.which, ping: Callable[[], str | None] | None = None
) -> str | None:
    """None when SLURM can take jobs here, else why not (commands missing, controller not answering)."""
    if not scheduler_present(which):
        return "no SLURM scheduler found (sbatch not on PATH)"
    problem = (ping or _controller_problem)()
    return f"the SLURM controller does not answer ({problem})" if problem else None


def resolve_name(
    launcher: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
    ping: Callable[[], str | None] | None = None,
) -> str:
    """'slurm' or 'local': the asked launcher (default auto), local when SLURM cannot take jobs here."""
    name = check_name(launcher)
    if name in LOCAL_NAMES:
        return "local"
    return "slurm" if why_not_slurm(which, ping) is None else "local"


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
    """`launcher` (default auto: SLURM when it can take jobs here) built with `kwargs`; a local launcher, with a
    note on stderr saying why, when SLURM cannot."""
    name = check_name(launcher)
    why = None if name in LOCAL_NAMES else why_not_slurm()
    if name not in LOCAL_NAMES and why is None:
        from .slurm import SlurmLauncher

        return SlurmLauncher(**kwargs)
    local, dropped = local_kwargs(kwargs)
    if why is not None:
        note = f"; ignoring {', '.join(dropped)}" if dropped else ""
        print(f"lazytune: {why}: running locally{note}", file=sys.stderr)
    return LocalLauncher(**local)
