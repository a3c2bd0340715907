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
    "FACTORIES", "LauncherArgumentError", "by_name", "empty", "k8s", "local", "remote", "sco", "slurm",
]  # fmt: skip


class LauncherArgumentError(TypeError, ValueError):
    """A launcher was given a name or an argument it does not take (the message says what it takes, and did you
    mean)."""


#: LazyLLM's launcher keywords (lazyllm/launcher/base.py, slurm.py) under lazytune's names.
LAZYLLM_NAMES = {"nnode": "nnodes", "timeout": "time"}
#: LazyLLM's positional order of `launchers.slurm(partition, nnode, nproc, ngpus, timeout)` (remote's too).
SLURM_POSITIONAL = ("partition", "nnodes", "nproc", "ngpus", "time")
#: LazyLLM launchers with no equivalent here, by name.
UNSUPPORTED = {"sco": "SenseCore", "k8s": "Kubernetes"}


def by_name(name: str | None = None, *args: Any, **kwargs: Any) -> Launcher:
    """The one way from a launcher name to a launcher: 'local' / 'empty', 'slurm', 'remote' / 'auto' (None):
    SLURM when it can take jobs here, else local with a note why.

    LazyLLM's forms are taken too: its keyword names (nnode, timeout, subprocess, ngpus=None) and slurm's positional
    order (partition, nnode, nproc, ngpus, timeout). Unknown names and arguments raise `LauncherArgumentError` (a
    ValueError) naming what is accepted, with did-you-mean; LazyLLM's sco / k8s are refused with the alternatives."""
    from .remote import LOCAL_NAMES, check_name
    from .slurm import SlurmLauncher

    _refuse_unsupported(name, f"launchers.{name}")
    try:
        name = check_name(name)
    except ValueError as exc:
        raise LauncherArgumentError(str(exc)) from None
    if name in LOCAL_NAMES:
        if args:
            raise LauncherArgumentError(f"launchers.{name} takes keywords only (e.g. ngpus=1, nproc=2, sync=False), "
                                        f"got positional {args!r}")
        return LocalLauncher(**_lazyllm_kwargs(name, kwargs, _accepted(LocalLauncher)))
    if name == "slurm":
        return SlurmLauncher(**_cluster_kwargs(name, args, kwargs))
    return remote(*args, launcher=name, **kwargs)


def _refuse_unsupported(name: str | None, shown: str) -> None:
    """LauncherArgumentError for LazyLLM's launchers that have no equivalent here (`shown`: how the name was given)."""
    key = str(name).strip().lower() if name is not None else None
    if key in UNSUPPORTED:
        raise LauncherArgumentError(
            f"{shown} is not a launcher this version knows: LazyLLM's {UNSUPPORTED[key]} launcher is not supported by "
            "lazytune; use launchers.slurm(partition=..., nnodes=..., ngpus=...), launchers.remote(...) (SLURM when "
            "present, else local) or launchers.local()"
        )


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
    if launcher in ("local", "empty"):
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


def _cluster_kwargs(launcher: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keywords for SlurmLauncher (remote: or the local one it falls back to) from LazyLLM's forms: its keyword
    names and the positional order `SLURM_POSITIONAL`."""
    from .slurm import SlurmLauncher

    if len(args) > len(SLURM_POSITIONAL):
        raise LauncherArgumentError(f"launchers.{launcher} takes at most {len(SLURM_POSITIONAL)} positional "
                                    f"arguments ({', '.join(SLURM_POSITIONAL)}), got {len(args)}")
    allowed = _accepted(SlurmLauncher)
    if launcher != "slurm":  # remote may run locally
        allowed += [k for k in _accepted(LocalLauncher) if k not in allowed]
    out = _lazyllm_kwargs(launcher, kwargs, allowed)
    for name, value in zip(SLURM_POSITIONAL, args, strict=False):
        if name in out:
            raise LauncherArgumentError(f"launchers.{launcher}: {name} given by position and by name")
        out[name] = value
    return out


def local(*args: Any, **kwargs: Any) -> LocalLauncher:
    """Run on this machine (see `LocalLauncher`). Also takes LazyLLM's `empty` keywords (ngpus=None, subprocess)."""
    return by_name("local", *args, **kwargs)  # type: ignore[return-value]


def empty(*args: Any, **kwargs: Any) -> LocalLauncher:
    """LazyLLM's name for the local launcher."""
    return by_name("empty", *args, **kwargs)  # type: ignore[return-value]


def slurm(*args: Any, **kwargs: Any) -> Launcher:
    """Submit to SLURM with sbatch (see `launchers.slurm.SlurmLauncher`). Positional arguments follow LazyLLM's
    `slurm(partition, nnode, nproc, ngpus, timeout)`; LazyLLM's keyword names work too."""
    return by_name("slurm", *args, **kwargs)


def remote(*args: Any, launcher: str | None = None, **kwargs: Any) -> Launcher:
    """SLURM when a scheduler is here and its controller answers, else local (see `launchers.remote`); `launcher`
    names one (slurm, auto / remote, local / empty: local drops the SLURM-only options). Positional arguments and
    keywords as for `launchers.slurm` (LazyLLM's too), except that a first one that is a launcher name is the name
    (`launchers.remote("local")`, not a partition called "local")."""
    from .remote import check_name, is_name
    from .remote import remote as auto

    if launcher is None and args and is_name(args[0]):
        launcher, args = args[0], args[1:]
    _refuse_unsupported(launcher, f"launcher={launcher!r}")
    try:
        name = check_name(launcher)
    except ValueError as exc:
        raise LauncherArgumentError(str(exc)) from None
    return auto(name, **_cluster_kwargs("remote", args, kwargs))


def _unsupported(name: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Launcher:
        return by_name(name, *args, **kwargs)  # raises, naming the launchers that exist

    refuse.__name__ = name
    refuse.__doc__ = f"LazyLLM's {UNSUPPORTED[name]} launcher: not supported here (raises, naming the ones that are)."
    return refuse


sco = _unsupported("sco")
k8s = _unsupported("k8s")

#: The launcher functions, for code that receives one uncalled (`launcher=launchers.empty`, as LazyLLM allows).
FACTORIES = (local, empty, slurm, remote)
