"""Launchers as lazytune makes them: `launchers.by_name` (LazyLLM's forms included) with lazytune's settings as the
defaults (LAZYTUNE_DEFAULT_LAUNCHER for the name, LAZYTUNE_SLURM_PARTITION for the partition). `launchers` itself
reads no lazytune setting; every launcher lazytune creates on its own (a trainer without one, finetune.auto, the
CLI, a LazyLLM launcher object) comes from `make_launcher`, and `from lazytune import launchers` gives this module's
versions of local/empty/slurm/remote."""

from __future__ import annotations

from typing import Any

import launchers
from launchers import *  # noqa: F403  (the launcher classes and Step, JobFailed, ... as `lazytune.launchers.X`)
from launchers import Launcher, LocalLauncher
from launchers.remote import is_name

from .config import settings
from .errors import ConfigError

LOCAL_NAMES = ("local", "empty")
NAMES = ("local", "empty", "slurm", "remote", "auto")


def _cluster_defaults(kwargs: dict[str, Any], args: tuple[Any, ...] = ()) -> dict[str, Any]:
    partition = settings().slurm_partition
    if partition and not args and kwargs.get("partition") is None:  # a positional partition comes first
        kwargs = {**kwargs, "partition": partition}
    return {"env_allow_prefixes": ("LAZYTUNE_",), **kwargs}  # the job sees lazytune's settings, as a local one does


def make_launcher(name: str | None = None, *args: Any, source: str | None = None, **kwargs: Any) -> Launcher:
    """A launcher from its name (default LAZYTUNE_DEFAULT_LAUNCHER), SLURM ones with LAZYTUNE_SLURM_PARTITION as the
    default partition; `args` and `kwargs` as `launchers.by_name` takes them (LazyLLM's forms too). `source` names
    where the name came from in the error for an unknown one."""
    if name is None:
        name, source = settings().default_launcher, source or "LAZYTUNE_DEFAULT_LAUNCHER"
    name = str(name).strip().lower()
    if name not in NAMES:
        where = f"{source}={name!r}" if source else f"unknown launcher {name!r}"
        raise ConfigError(f"{where}: expected one of {', '.join(NAMES)}")
    if name not in LOCAL_NAMES:
        kwargs = _cluster_defaults(kwargs, args)
    try:
        return launchers.by_name(name, *args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"launcher {name}: {exc}") from exc


def local(*args: Any, **kwargs: Any) -> LocalLauncher:
    """`launchers.local`."""
    return launchers.local(*args, **kwargs)


def empty(*args: Any, **kwargs: Any) -> LocalLauncher:
    """`launchers.empty` (LazyLLM's name for the local launcher)."""
    return launchers.empty(*args, **kwargs)


def slurm(*args: Any, **kwargs: Any) -> Launcher:
    """`launchers.slurm` with LAZYTUNE_SLURM_PARTITION as the default partition."""
    return make_launcher("slurm", *args, **kwargs)


def remote(*args: Any, launcher: str | None = None, **kwargs: Any) -> Launcher:
    """`launchers.remote`: `launcher` or LAZYTUNE_DEFAULT_LAUNCHER (local / slurm / remote / auto; unset: auto)."""
    if launcher is None and args and is_name(args[0]):
        launcher, args = args[0], args[1:]  # remote("local"): the name, not a partition
    name = launcher if launcher is not None else settings().configured_launcher
    local = str(name).strip().lower() in LOCAL_NAMES
    return launchers.remote(*args, launcher=name, **(kwargs if local else _cluster_defaults(kwargs, args)))


#: The launcher functions of both `launchers` and this module, for a launcher passed uncalled
#: (`launcher=launchers.empty`, as LazyLLM allows).
FACTORIES = (*launchers.FACTORIES, local, empty, slurm, remote)


def as_launcher(launcher: Any) -> Launcher | None:
    """A launcher object; LazyLLM's uncalled form (`launcher=launchers.empty`) is called with its defaults, and a
    LazyLLM launcher object becomes lazytune's (`from_lazyllm_launcher`)."""
    if launcher is None or isinstance(launcher, Launcher):
        return launcher
    if launcher in FACTORIES or (isinstance(launcher, type) and issubclass(launcher, Launcher)):
        return launcher()
    if type(launcher).__module__.startswith("lazyllm."):
        return from_lazyllm_launcher(launcher)
    raise ConfigError(f"launcher must be a launchers.* object (e.g. launchers.local()), got {launcher!r}")


def from_lazyllm_launcher(launcher: Any) -> Launcher:
    """The lazytune launcher for a LazyLLM launcher object (what LazyLLM's TrainableModule passes a finetune
    class): empty -> local, slurm -> slurm, with its GPUs, nodes, processes, partition and time limit. It always
    waits (sync): TrainableModule reads the merged model's folder from the call's return value."""
    kind = type(launcher).__name__
    ngpus = getattr(launcher, "ngpus", None)
    if kind == "EmptyLauncher":
        return make_launcher("local", ngpus=1 if ngpus is None else int(ngpus))
    if kind == "SlurmLauncher":
        return make_launcher("slurm", partition=getattr(launcher, "partition", None),
                             nnodes=getattr(launcher, "nnode", 1), nproc=getattr(launcher, "nproc", None),
                             ngpus=0 if ngpus is None else int(ngpus), time=getattr(launcher, "timeout", None))
    raise ConfigError(f"LazyLLM's {kind} has no lazytune equivalent: use LazyLLM's empty or slurm launcher, or a "
                      "lazytune launcher (launchers.local(), launchers.slurm(...))")
