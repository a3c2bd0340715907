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
