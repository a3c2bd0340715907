"""Tiny local models for tests: built once per folder with lazytune/scripts/make_tiny_model.py, then reused.

    from tests.helpers.models import tiny_llama, ml_python
    model = tiny_llama(tmp_path_factory.getbasetemp())          # Path of a folder with config.json + tokenizer

Or use the session-scoped fixtures by importing them into a test module:

    from tests.helpers.models import tiny_llama_model  # noqa: F401
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from lazytune.backends.base import script

#: Environments whose Python has torch + transformers + tokenizers, in order of preference.
ML_ENVS = ("llamafactory", "alpacalora", "flagembedding")


def ml_python(preferred: str = "llamafactory") -> str:
    """An interpreter that can build and train the tiny models: the `preferred` backend env's, else another one.

    Skips the test (with the install command) when no environment with transformers is installed.
    """
    from lazytune import envs

    for name in (preferred, *[n for n in ML_ENVS if n != preferred]):
        if os.environ.get(envs.python_variable(name)) or envs.read_stamp(name) is not None:
            return envs.python_for(name)
    pytest.skip(f"no backend environment with transformers installed: run `lazytune env install {preferred}`")


def tiny_model(tmp_root: Path, arch: str = "llama", python: str | None = None, hidden: int = 64, layers: int = 2,
               vocab: int = 512, name: str | None = None) -> Path:
    """Folder of a tiny random `arch` model under `tmp_root` (built on first use, reused after; safe across processes).

    `name` is the folder name (template detection reads it); default `tiny-<arch>-h<hidden>-l<layers>-v<vocab>`.
    """
    python = python or ml_python()
    folder = Path(tmp_root) / (name or f"tiny-{arch}-h{hidden}-l{layers}-v{vocab}")
    done = folder / "tiny_model.json"
    if done.is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers may ask for the same model at once
        if not done.is_file():
            argv = [python, script("make_tiny_model.py"), "--out", str(folder), "--arch", arch,
                    "--hidden", str(hidden), "--layers", str(layers), "--vocab", str(vocab)]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"make_tiny_model.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return folder


def tiny_llama(tmp_root: Path, python: str | None = None) -> Path:
    """A tiny Llama (hidden 64, 2 layers, vocab 512) under `tmp_root`, built once."""
    return tiny_model(tmp_root, "llama", python)


def tiny_qwen2(tmp_root: Path, python: str | None = None) -> Path:
    """A tiny Qwen2 (hidden 64, 2 layers, vocab 512) under `tmp_root`, built once."""
    return tiny_model(tmp_root, "qwen2", python)


@pytest.fixture(scope="session")
def tiny_llama_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide tiny Llama folder (built with the llamafactory env's Python, else another ML env's)."""
    return tiny_llama(tmp_path_factory.getbasetemp() / "models")
