"""`make gpu-check` / `make gpu-wheels` as far as a machine without a GPU can check them: the dry run lists every
command and runs none, the wheel list skips what the target has, and one LLaMA-Factory case really runs (on CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check, gpu_wheels
from tests.helpers.models import env_python

ROOT = Path(__file__).resolve().parent.parent
CASES = ("lf-lora-0.5b", "lf-lora-7b", "lf-qlora-0.5b", "lf-deepspeed-0.5b", "alpacalora-0.5b", "flagembedding",
         "collie-lora", "pytest-gpu", "matmul", "qlora-memory-7b")  # fmt: skip


def test_dry_run_prints_every_command_and_runs_none(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "work"
    assert gpu_check.main(["--dry-run", "--work", str(work), "--python", "/opt/py/bin/python3",
                           "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    text = capsys.readouterr().out
    for name in CASES:
        assert f"# {name} (time limit" in text
    assert "export LAZYTUNE_LLAMAFACTORY_PYTHON=/opt/py/bin/python3" in text
    assert f"export LAZYTUNE_COLLIE_PYTHON={work}/bin/python-collie" in text
    assert "-m pytest -m gpu" in text and "--by-hand" in text and "quantization_bit=4" in text
    assert not work.exists() and not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_make_gpu_check_dry_run() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make")
    proc = subprocess.run(["make", "-s", "gpu-check", "DRY_RUN=1", f"GPU_PYTHON={sys.executable}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert all(f"# {name} (time limit" in proc.stdout for name in CASES)
    assert sum(c.timeout for c in gpu_check.commands("python3", ROOT / ".whl", Path("/tmp/w"))) < 3 * 3600


def test_wheels_skip_what_the_target_has(tmp_path: Path) -> None:
    have = tmp_path / "freeze.txt"
    have.write_text("torch==2.11.0\npydantic==2.12.0\nPydantic-Core==2.41\n# comment\ntransformers\n")
    names = gpu_wheels.read_have(have)
    assert {"torch", "pydantic", "pydantic-core", "transformers"} <= names
    argvs = gpu_wheels.commands("3.12", tmp_path / ".whl", names)
    common = next(a for a in argvs if str(tmp_path / ".whl" / "common") in a and "download" in a)
    assert "llamafactory==0.9.5" in common and "pydantic==2.14.4" not in common and "fsspec==2025.3.0" in common
    assert "--no-deps" in common and "--only-binary=:all:" in common and "3.12" in common
    assert any("wheel" in a and "deepspeed==0.19.8" in a for a in argvs)  # source only: built into a wheel
    collie = next(a for a in argvs if str(tmp_path / ".whl" / "collie") in a)
    assert "transformers==4.40.2" in collie  # CoLLiE's own, although the target has a transformers
    image = gpu_wheels.read_have(ROOT / "benchmarks" / "gpu_image_packages.txt")
    assert {"torch", "transformers", "peft", "accelerate"} <= image and "llamafactory" not in image


def test_measure_memory_qlora_needs_a_gpu() -> None:
    python = env_python("llamafactory")
    proc = subprocess.run([python, str(ROOT / "lazytune/scripts/measure_memory.py"), "--config",
                           str(ROOT / "tests/fixtures/configs/Qwen2.5-0.5B.json"), "--qlora", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "--qlora needs a CUDA GPU" in proc.stderr and "TypeError" not in proc.stderr


TINY = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
        "vocab_size": 1024, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}  # fmt: skip


@pytest.mark.slow
def test_lf_case_runs_lazytune_and_by_hand(tmp_path: Path) -> None:
    """The benchmark's LLaMA-Factory case end to end on CPU: same YAML, same loss both ways."""
    python = env_python("llamafactory")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    # lazytune runs inside the backend env here, as on the GPU box; its core dependency msgspec comes from .whl there
    import msgspec

    pylib = tmp_path / "pylib"
    pylib.mkdir()
    (pylib / "msgspec").symlink_to(Path(msgspec.__file__).parent)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{pylib}", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "LAZYTUNE_QUIET": "1",
           "LAZYTUNE_LLAMAFACTORY_PYTHON": python}  # fmt: skip
    bench = [python, "-m", "benchmarks.gpu_bench"]
    model = tmp_path / "Qwen2.5-tiny"
    for args in (["make-model", "--config", str(tmp_path / "tiny.json"), "--out", str(model), "--vocab", "1000"],
                 ["make-data", "--out", str(tmp_path / "a.json"), "--records", "12", "--words", "200"],
                 ["lf", "--model", str(model), "--data", str(tmp_path / "a.json"), "--work", str(tmp_path / "lf"),
                  "--by-hand", "max_steps=2", "cutoff_len=64", "--result", str(tmp_path / "r.json")]):
        proc = subprocess.run([*bench, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["by_hand_exit"] == 0 and r["final_loss"] == r["by_hand_final_loss"]
    assert r["tokens_per_s"] > 0 and r["estimate_gib"] > 0
    assert set(r["lazytune_step_seconds"]) == {"data", "train", "export"}  # LF's data step counts the rows first


def test_merge_stays_on_the_cpu_where_cuda_is_present(tmp_path: Path) -> None:
    """merge_lora.py never moves the model to a GPU (it did: any model larger than one GPU failed to merge). Torch is
    made to report CUDA; the old code then called model.to('cuda') and crashed, the merge now runs on the CPU."""
    python = env_python("alpacalora")
    model, adapter = tmp_path / "base", tmp_path / "adapter"
    subprocess.run([python, str(ROOT / "lazytune/scripts/make_tiny_model.py"), "--out", str(model)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    make_adapter = ("import sys, torch; from transformers import AutoModelForCausalLM; "
                    "from peft import LoraConfig, get_peft_model; torch.manual_seed(0); "
                    "m = get_peft_model(AutoModelForCausalLM.from_pretrained(sys.argv[1]), "
                    "LoraConfig(r=4, target_modules=['q_proj', 'v_proj'], init_lora_weights=False)); "
                    "m.save_pretrained(sys.argv[2])")  # fmt: skip
    subprocess.run([python, "-c", make_adapter, str(model), str(adapter)], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    fake = tmp_path / "fake-cuda"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text("import torch\ntorch.cuda.is_available = lambda: True\n")
    env = {**os.environ, "PYTHONPATH": str(fake), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([python, str(ROOT / "lazytune/scripts/merge_lora.py"), "--base", str(model), "--adapter",
                           str(adapter), "--output", str(tmp_path / "merged")], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "merged" / "model.safetensors").is_file() and (tmp_path / "merged" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_alpacalora_trains_with_gradient_checkpointing(tmp_path: Path) -> None:
    """gradient_checkpointing=True (the GPU default) trains LoRA: input gradients are enabled, so the checkpointed
    blocks of a frozen model still get gradients and the loss is finite and logged."""
    from lazytune import finetune, launchers
    from tests.helpers.alpaca import write_alpaca
    from tests.helpers.models import tiny_llama

    python = env_python("alpacalora")
    model = tiny_llama(tmp_path / "models", python=python)
    trainer = finetune.alpacalora(model, tmp_path / "out", launcher=launchers.local(ngpus=0, stream=False),
                                  gradient_checkpointing=True, batch_size=4, micro_batch_size=2, val_set_size=0,
                                  num_epochs=1, warmup_steps=0, logging_steps=1, learning_rate=5e-3)  # fmt: skip
    assert "--gradient-checkpointing" in trainer.plan(write_alpaca(tmp_path / "d0.json")).steps[0].argv
    trainer(write_alpaca(tmp_path / "a.json"))
    log = (tmp_path / "out" / "lazyllm_lora" / "trainer_log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in log if "loss" in json.loads(line)]
    assert losses and all(x == x and x > 0 for x in losses)


def test_only_brings_the_setup_its_cases_need(tmp_path: Path) -> None:
    cmds = gpu_check.commands("python3", tmp_path / "no-wheels", tmp_path / "w", {"lf-lora-7b"})
    assert [c.name for c in cmds] == ["nvidia-smi", "install-common", "make-model-7b", "make-data", "lf-lora-7b"]
    with pytest.raises(SystemExit, match="unknown case.*lf-lora-0.5b"):
        gpu_check.commands("python3", tmp_path, tmp_path / "w", {"lf-lora-05b"})


def test_runner_records_results_failures_and_skips_done_setup(tmp_path: Path) -> None:
    ok = gpu_check.Command("ok", [sys.executable, "-c", "print('noise'); print('RESULT {\"tokens_per_s\": 5.0}')"], 30)
    bad = gpu_check.Command("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 30)
    done = gpu_check.Command("setup", ["/nonexistent"], 30, creates=tmp_path)
    results = [gpu_check.run_one(c, {}, tmp_path / "logs") for c in (ok, bad, done)]
    assert results[0]["exit"] == 0 and results[0]["result"] == {"tokens_per_s": 5.0}
    assert results[1]["exit"] == 3 and "boom" in results[1]["tail"]
    assert results[2]["cached"] and results[2]["exit"] == 0
    assert "| ok | 0 |" in gpu_check.table(results) and "5.0" in gpu_check.table(results)
