"""Settings from LAZYTUNE_* environment variables, read when asked (never cached at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# (variable, default, meaning): the README's settings table is generated from this list.
DOCUMENTED: tuple[tuple[str, str, str], ...] = (
    ("LAZYTUNE_HOME", "~/.lazytune", "lazytune's own folder: per-backend environments, URL cache, temp files"),
    ("LAZYTUNE_MODEL_PATH", "(empty)", "folders searched (os.pathsep-separated) for a base model given by name"),
    ("LAZYTUNE_DATA_PATH", "(empty)", "folders searched for a data file given by a relative path that does not exist"),
    ("LAZYTUNE_TRAIN_TARGET_ROOT", "current folder", "where a relative target_path is placed"),
    ("LAZYTUNE_TEMP_DIR", "$LAZYTUNE_HOME/tmp", "scratch space (downloads in progress)"),
    ("LAZYTUNE_DEFAULT_LAUNCHER", "local", "launcher used when none is passed: local, slurm or remote / auto"),
    ("LAZYTUNE_SLURM_PARTITION", "(none)", "default partition for launchers.slurm / remote"),
    ("LAZYTUNE_QUIET", "0", "1: no progress bar or streamed logs (CI)"),
    ("LAZYTUNE_<BACKEND>_PYTHON", "managed env, else this Python", "interpreter a backend's steps run with"),
    ("LAZYTUNE_TORCH_INDEX_URL", "(none)", "package index for torch builds in `lazytune env install` (CPU, CUDA 12)"),
    ("LAZYTUNE_INSTALLER", "uv if installed, else pip", "what `lazytune env install` installs with: uv or pip"),
)


@dataclass(frozen=True)
class Settings:
    home: Path
    model_path: tuple[Path, ...]
    data_path: tuple[Path, ...]
    train_target_root: Path
    temp_dir: Path
    default_launcher: str
    configured_launcher: str | None  # LAZYTUNE_DEFAULT_LAUNCHER as set (None: unset; remote() then picks itself)
    slurm_partition: str | None
    quiet: bool
    torch_index_url: str | None = None
    installer: str = "auto"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser() for p in value.split(os.pathsep) if p)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Current settings (reads the environment on every call)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("LAZYTUNE_HOME") or "~/.lazytune").expanduser()
    launcher = (env.get("LAZYTUNE_DEFAULT_LAUNCHER") or "local").strip().lower()
    return Settings(
        home=home,
        model_path=_paths(env.get("LAZYTUNE_MODEL_PATH", "")),
        data_path=_paths(env.get("LAZYTUNE_DATA_PATH", "")),
        train_target_root=Path(env.get("LAZYTUNE_TRAIN_TARGET_ROOT") or ".").expanduser(),
        temp_dir=Path(env.get("LAZYTUNE_TEMP_DIR") or home / "tmp").expanduser(),
        default_launcher=launcher,
        configured_launcher=(env.get("LAZYTUNE_DEFAULT_LAUNCHER") or "").strip().lower() or None,
        slurm_partition=env.get("LAZYTUNE_SLURM_PARTITION") or None,
        quiet=_flag(env.get("LAZYTUNE_QUIET", "0")),
        torch_index_url=env.get("LAZYTUNE_TORCH_INDEX_URL") or None,
        installer=(env.get("LAZYTUNE_INSTALLER") or "auto").strip().lower(),
    )


def python_override(backend: str, environ: Mapping[str, str] | None = None) -> str | None:
    """`LAZYTUNE_<BACKEND>_PYTHON` (name upper-cased, `-` -> `_`): the interpreter a backend's steps run with."""
    env = os.environ if environ is None else environ
    return env.get(f"LAZYTUNE_{backend.upper().replace('-', '_')}_PYTHON") or None
