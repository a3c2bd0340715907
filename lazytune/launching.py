"""Launchers as lazytune makes them: `launchers.by_name` with lazytune's settings as the defaults
(LAZYTUNE_DEFAULT_LAUNCHER for the name, LAZYTUNE_SLURM_PARTITION for the partition). `launchers` itself reads no
lazytune setting; every launcher lazytune creates on its own (a trainer without one, finetune.auto, the CLI) comes
from `make_launcher`, and `from lazytune import launchers` gives this module's versions of local/slurm/remote."""

from __future__ import annotations

from typing import Any

import launchers
from launchers import *  # noqa: F403  (the launcher classes and Step, JobFailed, ... as `lazytune.launchers.X`)
from launchers import Launcher, LocalLauncher

from .config import settings
from .errors import ConfigError

LOCAL_NAMES = ("local", "empty")
NAMES = ("local", "empty", "slurm", "remote", "auto")


def _cluster_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    partition = settings().slurm_partition
    if partition and kwargs.get("partition") is None:
        kwargs = {**kwargs, "partition": partition}
    return {"env_allow_prefixes": ("LAZYTUNE_",), **kwargs}  # the job sees lazytune's settings, as a local one does


def make_launcher(name: str | None = None, *, source: str | None = None, **kwargs: Any) -> Launcher:
    """A launcher from its name (default LAZYTUNE_DEFAULT_LAUNCHER), SLURM ones with LAZYTUNE_SLURM_PARTITION as the
    default partition. `source` names where the name came from in the error for an unknown one."""
    if name is None:
        name, source = settings().default_launcher, source or "LAZYTUNE_DEFAULT_LAUNCHER"
    name = str(name).strip().lower()
    if name not in NAMES:
        where = f"{source}={name!r}" if source else f"unknown launcher {name!r}"
        raise ConfigError(f"{where}: expected one of {', '.join(NAMES)}")
    if name not in LOCAL_NAMES:
        kwargs = _cluster_defaults(kwargs)
    try:
        return launchers.by_name(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"launcher {name}: {exc}") from exc


def local(**kwargs: Any) -> LocalLauncher:
    """`launchers.local`."""
    return LocalLauncher(**kwargs)


empty = local


def slurm(**kwargs: Any) -> Launcher:
    """`launchers.slurm` with LAZYTUNE_SLURM_PARTITION as the default partition."""
    return make_launcher("slurm", **kwargs)


def remote(launcher: str | None = None, **kwargs: Any) -> Launcher:
    """`launchers.remote`: `launcher` or LAZYTUNE_DEFAULT_LAUNCHER (local / slurm / remote / auto; unset: auto)."""
    name = launcher if launcher is not None else settings().configured_launcher
    local = str(name).strip().lower() in LOCAL_NAMES
    return launchers.remote(name, **(kwargs if local else _cluster_defaults(kwargs)))
