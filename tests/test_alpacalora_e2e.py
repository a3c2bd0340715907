"""finetune.alpacalora for real on CPU: a tiny local Llama, alpaca data, training + merge in the alpacalora env.

Kill-and-resume from checkpoints is tested for real in tests/test_faults.py (test_alpacalora_killed_then_resumed),
DDP across 2 SLURM nodes in tests/test_slurm_cluster.py (test_real_alpacalora_across_two_nodes).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from launchers import JobFailed
from lazytune import finetune, launchers
from lazytune.backends.base import script
from tests.conftest import OFFLINE
from tests.helpers.alpaca import alpaca_records, inspect_merge, write_alpaca
from tests.helpers.models import tiny_llama, tiny_qwen2

pytestmark = pytest.mark.slow

#: 12 records -> 10 train + 2 val; 4 per step (2 x 2 accumulation, or 2 processes x 2); 3 steps per epoch.
FAST = {"batch_size": 4, "micro_batch_size": 2, "val_set_size": 2, "learning_rate": 5e-3, "warmup_steps": 0,
        "logging_steps": 1, "save_steps": 3, "eval_steps": 3}  # fmt: skip


def safetensors_names(path: Path) -> list[str]:
    """Tensor names from a .safetensors header (8-byte length + JSON), without the safetensors package."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return [k for k in header if k != "__metadata__"]


def cpu() -> launchers.LocalLauncher:
    return launchers.local(ngpus=0, stream=False)


@pytest.fixture(scope="module")
def alpaca_python() -> str:
    from lazytune import envs

    if not os.environ.get(envs.python_variable("alpacalora")) and envs.read_stamp("alpacalora") is None:
        pytest.skip("the alpacalora environment is not installed: run `lazytune env install alpacalora`")
    return envs.python_for("alpacalora")


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory):
    """conftest's offline variables for module-scoped fixtures (its own fixture is per test)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        mp.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
        yield


@pytest.fixture(scope="module")
def model(alpaca_python: str, offline: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.getbasetemp() / "models", python=alpaca_python)


@pytest.fixture(scope="module")
def trained(model: Path, offline: None, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real run with train_on_inputs=False: 3 epochs, a checkpoint every 3 steps, then the merge."""
    root = tmp_path_factory.mktemp("alpacalora")
    data = write_alpaca(root / "alpaca.json")
    started = time.time()
    trainer = finetune.alpacalora(model, root / "target", model_name="tiny", launcher=cpu(), train_on_inputs=False,
                                  num_epochs=3, **FAST)  # fmt: skip
    result = trainer(data)
    return {"result": Path(result), "target": root / "target", "data": data, "seconds": time.time() - started}


def test_train_merge_generate(trained: dict, model: Path, alpaca_python: str) -> None:
    target, result = trained["target"], trained["result"]
    lora, merge = target / "lazyllm_lora", target / "lazyllm_merge"
    assert result == merge
    assert (lora / "adapter_config.json").is_file() and (lora / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in lora.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]
    assert (merge / "model.safetensors").is_file() and (merge / "config.json").is_file()
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in merge.iterdir()}  # cp_files='tokeniz*'

    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED" and manifest["backend"] == "alpacalora"
    assert [s["exit_code"] for s in manifest["job"]["steps"]] == [0, 0]
    metrics = manifest["metrics"]
    assert metrics["steps"] == 9 and metrics["train_samples"] == 10 and metrics["val_samples"] == 2
    assert metrics["final_loss"] < metrics["first_loss"]  # it learned something
    assert manifest["versions"]["peft"] and manifest["versions"]["transformers"]

    prompt = "Below is an instruction that describes a task. Write a response that appropriately completes the " \
             "request.\n\n### Instruction:\nSay 3\n\n### Response:\n"
    seen = inspect_merge(alpaca_python, model, lora, merge, prompt)
    assert seen["merged_vs_peft_max_diff"] < 1e-4  # merged == base + adapter
    assert seen["merged_vs_base_max_diff"] > 1e-2  # and differs from the base
    assert not seen["merged_has_lora_keys"]
    assert seen["generated"]["merged"] != seen["generated"]["base"]
    print(f"alpacalora 1 process: train+merge {trained['seconds']:.1f} s; generated {seen['generated']}")


def test_same_result_as_running_the_trainer_by_hand(trained: dict, tmp_path: Path) -> None:
    """The plan's train argv, run by hand into another folder, writes the very same adapter (seeded)."""
    manifest = json.loads((trained["target"] / "lazytune_run.json").read_text())
    argv = manifest["plan"]["steps"][0]["argv"]
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "by-hand")
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    ours = (trained["target"] / "lazyllm_lora" / "adapter_model.safetensors").read_bytes()
    assert (tmp_path / "by-hand" / "adapter_model.safetensors").read_bytes() == ours


def test_ends_with_the_best_checkpoint_as_alpaca_lora(trained: dict) -> None:
    """load_best_model_at_end (alpaca-lora and LazyLLM, with a validation set): the adapter is the best checkpoint's."""
    lora = trained["target"] / "lazyllm_lora"
    last = max(lora.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    evals = {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e}
    assert int(best.name.split("-")[1]) == min(evals, key=evals.get)
    assert (lora / "adapter_model.safetensors").read_bytes() == (best / "adapter_model.safetensors").read_bytes()
    assert any("lr" in e for e in (json.loads(x) for x in (lora / "trainer_log.jsonl").read_text().splitlines()))


def test_loss_covers_only_response_tokens(trained: dict, model: Path, alpaca_python: str) -> None:
    stats = json.loads((trained["target"] / "lazyllm_lora" / "train_data_stats.json").read_text())
    assert stats["train_on_inputs"] is False
    assert stats["label_tokens"] == stats["response_tokens"] < stats["prompt_tokens"]
    assert stats["input_tokens"] == stats["prompt_tokens"] + stats["response_tokens"]
    outputs = {r["output"] for r in alpaca_records()}
    for example in stats["examples"]:  # the label tokens decode to exactly the response + eos
        assert example["labels"].endswith("</s>") and example["labels"].removesuffix("</s>") in outputs
        assert "### Instruction" in example["text"] and "###" not in example["labels"]

    # the same data with train_on_inputs=True: every token is a label; filter_nums drops the long samples
    out = trained["target"].parent / "data-only"
    argv = [alpaca_python, script("alpacalora_train.py"), "--base-model", str(model), "--data", str(trained["data"]),
            "--output-dir", str(out), "--prompt-template", str(script("templates/alpaca.json")),
            "--lora-target-modules", "q_proj", "--batch-size", "4", "--micro-batch-size", "2", "--val-set-size", "0",
            "--train-on-inputs", "true", "--filter-nums", "90", "--data-only"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    stats = json.loads((out / "train_data_stats.json").read_text())
    assert stats["label_tokens"] == stats["input_tokens"] > stats["response_tokens"]
    assert stats["dropped_over_filter_nums"] == 6 and stats["train_samples"] == 6  # the 6 records with an input


def test_cutoff_len_leaving_no_response_fails_before_training(model: Path, tmp_path: Path) -> None:
    data = write_alpaca(tmp_path / "alpaca.json")
    target = tmp_path / "target"
    trainer = finetune.alpacalora(model, target, launcher=cpu(), cutoff_len=40, **FAST)  # passes the cheap check
    with pytest.raises(JobFailed) as info:
        trainer(data)
    assert info.value.step == "train" and info.value.exit_code == 2
    assert "cutoff_len=40 leaves no response tokens" in str(info.value)
    assert "shortest prompt: 82 tokens" in str(info.value)
    assert not (target / "lazyllm_merge").exists()  # the merge never ran
    assert not (target / "lazyllm_lora" / "adapter_config.json").exists()
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "FAILED" and manifest["job"]["steps"][1]["exit_code"] is None


def test_unknown_lora_target_module_fails_clearly(model: Path, tmp_path: Path) -> None:
    data = write_alpaca(tmp_path / "alpaca.json")
    trainer = finetune.alpacalora(model, tmp_path / "target", launcher=cpu(), lora_target_modules="wqkv,wo", **FAST)
    with pytest.raises(JobFailed, match=r"cannot add LoRA to .*lora_target_modules=\['wqkv', 'wo'\]") as info:
        trainer(data)
    assert info.value.exit_code == 2 and not (tmp_path / "target" / "lazyllm_merge").exists()


def test_two_processes_torchrun(alpaca_python: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """DDP over gloo, on a Qwen2 this time (its default LoRA targets come from its config too)."""
    model = tiny_qwen2(tmp_path_factory.getbasetemp() / "models", python=alpaca_python)
    data = write_alpaca(tmp_path / "alpaca.json")
    target = tmp_path / "target"
    started = time.time()
    launcher = launchers.local(ngpus=0, nproc=2, stream=False)
    result = finetune.alpacalora(model, target, launcher=launcher, train_on_inputs=False, num_epochs=2,
                                 modules_to_save=["lm_head"], **FAST)(data)  # fmt: skip
    seconds = time.time() - started
    lora = target / "lazyllm_lora"
    summary = json.loads((lora / "train_result.json").read_text())
    assert summary["world_size"] == 2 and summary["gradient_accumulation_steps"] == 1
    assert summary["global_step"] == 6  # 10 samples / (2 processes x 2) -> 3 steps per epoch
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["plan"]["options"]["lora_target_modules"] == ["q_proj", "v_proj"]
    log = Path(manifest["job"]["steps"][0]["log"]).read_text()
    assert "torch.distributed.run" in log.splitlines()[0] and "--nproc_per_node=2" in log.splitlines()[0]
    assert "world size 2, micro batch 2, gradient accumulation 1, effective batch 4" in log
    assert log.count("adapter saved to") == 1  # rank 0 alone saves
    assert (Path(result) / "model.safetensors").is_file()
    tensors = safetensors_names(lora / "adapter_model.safetensors")
    assert any("lm_head" in n for n in tensors) and any("lora_A" in n for n in tensors)  # modules_to_save saved
    print(f"alpacalora 2 processes (gloo): train+merge {seconds:.1f} s")
