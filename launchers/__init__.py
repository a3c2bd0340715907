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
    "empty", "local", "remote", "slurm",
]  # fmt: skip


def local(**kwargs: Any) -> LocalLauncher:
    """Run on this machine (see `LocalLauncher`)."""
    return LocalLauncher(**kwargs)


def empty(**kwargs: Any) -> LocalLauncher:
    """LazyLLM's name for the local launcher."""
    return LocalLauncher(**kwargs)


def slurm(**kwargs: Any) -> Launcher:
    """Submit to SLURM with sbatch (see `launchers.slurm.SlurmLauncher`)."""
    from .slurm import SlurmLauncher

    return SlurmLauncher(**kwargs)


def remote(**kwargs: Any) -> Launcher:
    """The configured cluster launcher (LAZYTUNE_DEFAULT_LAUNCHER), or local when no scheduler is present."""
    from .remote import remote as resolve

    return resolve(**kwargs)
