"""Tiny local models for tests: built once per folder with lazytune/scripts/make_tiny_model.py, then reused.

    from tests.helpers.models import tiny_llama, ml_python
    model = tiny_llama(tmp_path_factory.getbasetemp())          # Path of a folder with config.json + tokenizer

Or use the session-scoped fixtures by importing them into a test module:

    from tests.helpers.models import tiny_llama_model  # noqa: F401
"""

from __future__ import annotations

import fcntl
import json
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


def env_python(name: str) -> str:
    """The interpreter of the backend environment `name` (installed, or overridden with LAZYTUNE_<NAME>_PYTHON).

    When it is missing the test is skipped, or fails where LAZYTUNE_REQUIRE_ENVS names it ("1": every env).
    """
    from lazytune import envs

    if os.environ.get(envs.python_variable(name)) or envs.read_stamp(name) is not None:
        return envs.python_for(name)
    message = f"backend environment {name!r} is not installed: run `lazytune env install {name}`"
    required = os.environ.get("LAZYTUNE_REQUIRE_ENVS", "").replace(",", " ").split()
    if "1" in required or name in required:  # CI installs the envs first: a missing one is a failure there
        pytest.fail(message)
    pytest.skip(message)


CHECK_MERGED = r"""
import json, sys, torch
from pathlib import Path
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
base, merged = Path(sys.argv[1]), Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(merged)
model = AutoModelForCausalLM.from_pretrained(merged)
ids = tok("Repeat the number 3", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
a = {k: v for f in sorted(base.glob("*.safetensors")) for k, v in load_file(f).items()}
b = {k: v for f in sorted(merged.glob("*.safetensors")) for k, v in load_file(f).items()}
common = sorted(set(a) & set(b))
diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in common)
print("CHECK " + json.dumps({"generated": out.shape[1] - ids.shape[1], "max_weight_diff": diff,
      "tensors": len(common), "bin_files": [p.name for p in merged.glob("*.bin")],
      "dtype": str(next(model.parameters()).dtype)}))
"""


def check_merged(python: str, base: Path, merged: Path) -> dict:
    """Load `merged` with transformers (in `python`), generate a few tokens, compare its weights with `base`.

    Returns {"generated": n new tokens, "max_weight_diff": largest |merged - base|, "tensors": n compared,
    "bin_files": legacy .bin files present, "dtype": ...}.
    """
    proc = subprocess.run([python, "-c", CHECK_MERGED, str(base), str(merged)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("CHECK ")), None)
    if proc.returncode != 0 or line is None:
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise AssertionError(f"loading {merged} failed ({proc.returncode}):\n{output}")
    return json.loads(line[len("CHECK ") :])
