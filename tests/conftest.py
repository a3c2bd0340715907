"""Shared test set-up: nothing may reach a model hub; each test gets its own HF cache and lazytune target root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "DISABLE_VERSION_CHECK": "1",
           "LAZYTUNE_QUIET": "1", "WANDB_DISABLED": "true", "PYTHONUNBUFFERED": "1",
           # 2 cores: torch's default threads per process oversubscribe them under torchrun (measured 50x slower)
           "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    # Managed backend environments live in the real LAZYTUNE_HOME (installed once by the Makefile), so it is kept.
    monkeypatch.delenv("LAZYTUNE_DEFAULT_LAUNCHER", raising=False)
    monkeypatch.delenv("LAZYTUNE_TRAIN_TARGET_ROOT", raising=False)


@pytest.fixture
def tiny_folder_model(tmp_path: Path) -> Path:
    """A folder that looks like a model to lazytune (config.json + tokenizer files), for non-ML backends."""
    model = tmp_path / "tiny model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    (model / "tokenizer.json").write_text("{}")
    (model / "tokenizer_config.json").write_text("{}")
    return model


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    """A small alpaca-format JSON array."""
    import json

    data = [{"instruction": f"Say {i}", "input": "", "output": f"{i} {i} {i}"} for i in range(12)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def pytest_report_header(config: pytest.Config) -> str:
    return f"lazytune home: {os.environ.get('LAZYTUNE_HOME', '~/.lazytune')}"


def python_with_packages(folder: Path, dists: dict[str, str]) -> str:
    """A real interpreter (a bare venv) whose site-packages holds the metadata of `dists` (name -> version) and
    nothing else: the stand-in for a GPU machine's backend environment with deepspeed / bitsandbytes installed,
    which plan-time package checks read (package metadata only; nothing is imported from them)."""
    import subprocess
    import sys

    venv = folder / "python-with-packages"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    for name, version in dists.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return str(venv / "bin" / "python")


@pytest.fixture
def gpu_packages(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """LLaMA-Factory's and alpacalora's steps run with an interpreter that has deepspeed and bitsandbytes."""
    python = python_with_packages(tmp_path_factory.mktemp("gpu-env"), {"deepspeed": "0.19.8", "bitsandbytes": "0.50.2"})
    for name in ("LLAMAFACTORY", "ALPACALORA"):
        monkeypatch.setenv(f"LAZYTUNE_{name}_PYTHON", python)
    return python
