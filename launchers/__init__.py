"""Run argv-list pipelines locally or on a cluster. Knows nothing about fine-tuning.

    import launchers
    job = launchers.local(ngpus=2).run([Step("train", [...], log="train.log")], name="my-job")
"""

from __future__ import annotations

import difflib
import inspect
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
    "FACTORIES", "LauncherArgumentError", "empty", "k8s", "local", "remote", "sco", "slurm",
]  # fmt: skip


class LauncherArgumentError(TypeError, ValueError):
    """A launcher was given an argument it does not take (the message says what it takes, and did you mean)."""


#: LazyLLM's launcher keywords (lazyllm/launcher/base.py, slurm.py) under lazytune's names.
LAZYLLM_NAMES = {"nnode": "nnodes", "timeout": "time"}
#: LazyLLM's positional order of `launchers.slurm(partition, nnode, nproc, ngpus, timeout)`.
SLURM_POSITIONAL = ("partition", "nnodes", "nproc", "ngpus", "time")


def _accepted(cls: type) -> list[str]:
    return [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "args", "kwargs")]


def _lazyllm_kwargs(launcher: str, kwargs: dict[str, Any], allowed: list[str]) -> dict[str, Any]:
    """`kwargs` with LazyLLM's names and forms translated for `launcher` (local or slurm); unknown keywords are an
    error naming the close ones. Translations: nnode -> nnodes, timeout -> time (SLURM), ngpus=None -> the default,
    subprocess (LazyLLM's empty launcher: lazytune always runs steps as subprocesses) dropped."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        name = LAZYLLM_NAMES.get(key, key)
        if name in out:
            raise LauncherArgumentError(f"launchers.{launcher}: {key!r} and {name!r} both given; pass one")
        out[name] = value
    out.pop("subprocess", None)
    if out.get("ngpus", 0) is None:
        out.pop("ngpus")  # LazyLLM's "not set"
    if launcher == "local":
        for key, why in (("nnodes", "a local run has one node"), ("time", "a local run has no time limit")):
            value = out.pop(key, None)
            if value not in (None, 1) or (key == "time" and value is not None):
                raise LauncherArgumentError(f"launchers.{launcher}: {key}={value!r} is not possible: {why}; use "
                                            "launchers.slurm(...) or launchers.remote(...) for that")
    unknown = [k for k in out if k not in allowed]
    if unknown:
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed + list(LAZYLLM_NAMES), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            problems.append(f"unknown argument {key!r}{hint}")
        raise LauncherArgumentError(f"launchers.{launcher}: {'; '.join(problems)} (it takes: {', '.join(allowed)})")
    return out


def local(*args: Any, **kwargs: Any) -> LocalLauncher:
    """Run on this machine (see `LocalLauncher`). Also takes LazyLLM's `empty` keywords (ngpus=None, subprocess)."""
    if args:
        raise LauncherArgumentError(f"launchers.local takes keywords only (e.g. ngpus=1, nproc=2, sync=False), "
                                    f"got positional {args!r}")
    return LocalLauncher(**_lazyllm_kwargs("local", kwargs, _accepted(LocalLauncher)))


def empty(*args: Any, **kwargs: Any) -> LocalLauncher:
    """LazyLLM's name for the local launcher."""
    return local(*args, **kwargs)


def slurm(*args: Any, **kwargs: Any) -> Launcher:
    """Submit to SLURM with sbatch (see `launchers.slurm.SlurmLauncher`). Positional arguments follow LazyLLM's
    `slurm(partition, nnode, nproc, ngpus, timeout)`; LazyLLM's keyword names work too."""
    from .slurm import SlurmLauncher

    if len(args) > len(SLURM_POSITIONAL):
        raise LauncherArgumentError(f"launchers.slurm takes at most {len(SLURM_POSITIONAL)} positional arguments "
                                    f"({', '.join(SLURM_POSITIONAL)}), got {len(args)}")
    kwargs = _lazyllm_kwargs("slurm", kwargs, _accepted(SlurmLauncher))
    for name, value in zip(SLURM_POSITIONAL, args, strict=False):
        if name in kwargs:
            raise LauncherArgumentError(f"launchers.slurm: {name} given by position and by name")
        kwargs[name] = value
    return SlurmLauncher(**kwargs)


def remote(*args: Any, **kwargs: Any) -> Launcher:
    """The configured cluster launcher (LAZYTUNE_DEFAULT_LAUNCHER), or local when no scheduler is present.
    Positional arguments and keywords as for `launchers.slurm` (LazyLLM's too)."""
    from .remote import remote as resolve
    from .slurm import SlurmLauncher

    launcher = kwargs.pop("launcher", None)
    kwargs = _lazyllm_kwargs("remote", kwargs, _accepted(SlurmLauncher) + ["stream"])
    for name, value in zip(SLURM_POSITIONAL, args, strict=False):
        kwargs.setdefault(name, value)
    if len(args) > len(SLURM_POSITIONAL):
        raise LauncherArgumentError(f"launchers.remote takes at most {len(SLURM_POSITIONAL)} positional arguments")
    return resolve(launcher, **kwargs)


def _unsupported(name: str, what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Launcher:
        raise LauncherArgumentError(
            f"launchers.{name} ({what}) is not supported by lazytune: use launchers.slurm(partition=..., "
            "nnodes=..., ngpus=...), launchers.remote(...) (SLURM when present, else local) or launchers.local()"
        )

    refuse.__name__ = name
    refuse.__doc__ = f"LazyLLM's {what} launcher: not supported here (raises, naming the launchers that are)."
    return refuse


sco = _unsupported("sco", "SenseCore")
k8s = _unsupported("k8s", "Kubernetes")

#: The launcher functions, for code that receives one uncalled (`launcher=launchers.empty`, as LazyLLM allows).
FACTORIES = (local, empty, slurm, remote)
