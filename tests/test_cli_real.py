"""The CLI over a real backend: `lazytune train llamafactory` trains a tiny local Qwen2 on CPU, with progress lines
read from LLaMA-Factory's own trainer_log.jsonl, its loss curve and the manifest. Needs the llamafactory env."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import lf_data
from tests.helpers.models import env_python, tiny_model
from tests.test_cli import lazytune


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = env_python("llamafactory")
    return tiny_model(tmp_path_factory.getbasetemp() / "models", "qwen2", python, name="Qwen2.5-tiny")


@pytest.mark.slow
def test_train_llamafactory_through_the_cli(model: Path, tmp_path: Path) -> None:
    data = lf_data.alpaca(tmp_path / "data" / "alpaca.json", n=16)
    target = tmp_path / "sft"
    out = lazytune("train", "llamafactory", "--base", model, "--target", target, "--data", data, "--progress",
                   "lines", "num_train_epochs=2", "per_device_train_batch_size=4", "gradient_accumulation_steps=1",
                   "logging_steps=1", "learning_rate=1e-3", "cutoff_len=64", "lora_target=q_proj,v_proj",
                   timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(target / "lazyllm_merge")
    steps = [int(s) for s in re.findall(r"lazytune: llamafactory step (\d+)/8 ", out.stderr)]
    assert steps and steps[-1] == 8 and steps == sorted(steps), out.stderr[-3000:]  # fed by LF's own log
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED" and isinstance(manifest["metrics"]["final_loss"], float)
    assert manifest["progress_log"] == str(target / "lazyllm_lora" / "trainer_log.jsonl")
    assert manifest["loss_curve"] and Path(manifest["loss_curve"]).stat().st_size > 1000
    assert manifest["plan"]["options"]["lora_target"] == ["q_proj", "v_proj"]
    jobs = lazytune("jobs", "--root", tmp_path)
    assert "llamafactory" in jobs.stdout and "COMPLETED" in jobs.stdout and "8/8" in jobs.stdout


def test_report_to_tensorboard_passes_through(model: Path, tmp_path: Path) -> None:
    data = lf_data.alpaca(tmp_path / "alpaca.json")
    out = lazytune("plan", "llamafactory", "--base", model, "--target", tmp_path / "t", "--data", data,
                   "report_to=tensorboard")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"^report_to: tensorboard$", out.stdout, re.M), out.stdout
