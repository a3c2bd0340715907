"""finetune.llamafactory for real: LLaMA-Factory trains a tiny local Qwen2 on CPU, then merges / copies it.

Needs the llamafactory environment (`lazytune env install llamafactory`); each run takes 10-30 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

import launchers
from lazytune import DataError, JobFailed, finetune
from lazytune.run import Run
from tests.helpers import lf_data
from tests.helpers.models import check_merged, env_python, tiny_model

pytestmark = pytest.mark.slow

FAST = dict(num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
            learning_rate=1e-3, cutoff_len=64)  # fmt: skip


@pytest.fixture(scope="module")
def lf_python() -> str:
    return env_python("llamafactory")


@pytest.fixture(scope="module")
def model(lf_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 whose folder name gives the `qwen` template (its tokenizer has the ChatML tokens)."""
    return tiny_model(tmp_path_factory.getbasetemp() / "models", "qwen2", lf_python, name="Qwen2.5-tiny")


def quiet() -> launchers.LocalLauncher:
    return launchers.local(stream=False)


def manifest(target: Path) -> dict:
    return json.loads((target / "lazytune_run.json").read_text())


def test_keys_json_matches_installed_llamafactory(lf_python: str) -> None:
    """A key renamed or removed upstream fails here, not in a user's run (regenerate with lf_keys.py --out)."""
    from lazytune.backends.base import script
    from lazytune.backends.llamafactory.keys import config_dir

    proc = subprocess.run([lf_python, script("lf_keys.py"), "--check", str(config_dir() / "keys.json")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sft_lora_alpaca_adapter_and_merged_model(lf_python: str, model: Path, tmp_path: Path) -> None:
    target = tmp_path / "sft lora"  # a space in the path on purpose
    trainer = finetune.llamafactory(model, target, launcher=quiet(), lora_r=8, **FAST)
    merged = trainer(lf_data.alpaca(tmp_path / "data" / "alpaca.json"))
    assert merged == str(target / "lazyllm_merge")
    lora = target / "lazyllm_lora"
    assert (lora / "adapter_config.json").is_file() and (lora / "adapter_model.safetensors").is_file()
    assert json.loads((lora / "adapter_config.json").read_text())["r"] == 8
    assert (lora / "training_loss.png").is_file()  # plot_loss on
    check = check_merged(lf_python, model, Path(merged))
    assert check["generated"] > 0 and check["max_weight_diff"] > 1e-6 and check["bin_files"] == []
    m = manifest(target)
    assert m["state"] == "COMPLETED" and [s["exit_code"] for s in m["job"]["steps"]] == [0, 0, 0]
    assert m["versions"]["llamafactory"] == "0.9.5"
    assert isinstance(m["metrics"]["final_loss"], float) and m["metrics"]["steps"] == 6

    # The same train.yaml run by hand gives the very same adapter (lazytune adds nothing the YAML doesn't say).
    by_hand = yaml.safe_load((Path(m["plan"]["run_dir"]) / "train.yaml").read_text())
    by_hand["output_dir"] = str(tmp_path / "by hand")
    (tmp_path / "by_hand.yaml").write_text(yaml.safe_dump(by_hand))
    cli = Path(lf_python).parent / "llamafactory-cli"
    proc = subprocess.run([str(cli), "train", str(tmp_path / "by_hand.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ours, theirs = lora / "adapter_model.safetensors", tmp_path / "by hand" / "adapter_model.safetensors"
    assert hashlib.sha256(ours.read_bytes()).digest() == hashlib.sha256(theirs.read_bytes()).digest()


def test_sharegpt_both_tag_styles_full_and_called_twice(model: Path, tmp_path: Path) -> None:
    data = [lf_data.sharegpt(tmp_path / "a" / "train.json"), lf_data.openai_messages(tmp_path / "b" / "train.jsonl")]
    target = tmp_path / "full"
    trainer = finetune.llamafactory(model, target, launcher=quiet(), finetuning_type="full", overwrite=True,
                                    **{**FAST, "num_train_epochs": 1, "learning_rate": 1e-4})  # fmt: skip
    first = trainer(data)
    runs = {p.name for p in (target / "lazytune_runs").iterdir()}
    assert trainer(data) == first  # a second call of the same trainer works (a new run folder)
    assert len({p.name for p in (target / "lazytune_runs").iterdir()} - runs) == 1
    merged = Path(first)
    assert (merged / "model.safetensors").is_file() and not list(merged.glob("checkpoint-*"))
    train_log = (Path(manifest(target)["plan"]["run_dir"]) / "logs" / "train.log").read_text()
    assert "a/train.json" in train_log and "b/train.jsonl" in train_log  # same stem, distinct dataset names
    assert "Num examples = 24" in train_log
    assert manifest(target)["metrics"]["steps"] == 6  # 24 examples, batch 4


def test_pt_plain_text_freeze(model: Path, tmp_path: Path) -> None:
    target = tmp_path / "pt"
    trainer = finetune.llamafactory(model, target, launcher=quiet(), stage="pt", finetuning_type="freeze",
                                    freeze_trainable_layers=1, **FAST)  # fmt: skip
    merged = Path(trainer(lf_data.text(tmp_path / "corpus.text")))  # odd extension: linked as .txt for LF
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert manifest(target)["metrics"]["final_loss"] is not None


def test_dpo_lora_sharegpt_pairs(lf_python: str, model: Path, tmp_path: Path) -> None:
    target = tmp_path / "dpo"
    merged = finetune.llamafactory(model, target, launcher=quiet(), stage="dpo", use_dora=True, use_rslora=True,
                                   **FAST)(lf_data.sharegpt_pairs(tmp_path / "prefs.json"))  # fmt: skip
    adapter = json.loads((target / "lazyllm_lora" / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True and adapter["use_rslora"] is True  # the LoRA variants pass through
    assert check_merged(lf_python, model, Path(merged))["max_weight_diff"] > 1e-6
    assert manifest(target)["metrics"]["final_loss"] is not None


@pytest.mark.parametrize(("stage", "make"), [("rm", lf_data.pairs), ("kto", lf_data.kto)])
def test_rm_kto_full(model: Path, tmp_path: Path, stage: str, make) -> None:
    target = tmp_path / stage
    trainer = finetune.llamafactory(model, target, launcher=quiet(), stage=stage, finetuning_type="full",
                                    **{**FAST, "num_train_epochs": 1})  # fmt: skip
    merged = Path(trainer(make(tmp_path / f"{stage}.json")))
    assert (merged / "model.safetensors").is_file()
    if stage == "rm":
        assert (merged / "value_head.safetensors").is_file()
    assert manifest(target)["state"] == "COMPLETED"


def test_train_failure_raises_with_log_tail_and_skips_export(model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "Qwen2.5-broken"
    broken.mkdir()
    for f in model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    target = tmp_path / "failed"
    with pytest.raises(JobFailed, match="step 'train' FAILED") as info:
        finetune.llamafactory(broken, target, launcher=quiet(), **FAST)(lf_data.alpaca(tmp_path / "a.json"))
    assert info.value.log_tail.strip()
    m = manifest(target)
    assert m["state"] == "FAILED" and m["job"]["failed_step"] == "train"
    assert m["job"]["steps"][2]["exit_code"] is None  # export never ran
    assert not (target / "lazyllm_merge").exists()


def test_two_processes_on_cpu_gloo(lf_python: str, model: Path, tmp_path: Path) -> None:
    target = tmp_path / "ddp"
    trainer = finetune.llamafactory(model, target, launcher=launchers.local(nproc=2, stream=False), **FAST)
    plan = trainer.plan(lf_data.alpaca(tmp_path / "a.json"))
    merged = trainer.start(plan=plan).wait()
    log = (plan.run_dir / "logs" / "train.log").read_text()
    assert "torch.distributed.run" in log.splitlines()[0] and "world size: 2" in log
    assert check_merged(lf_python, model, Path(merged))["max_weight_diff"] > 1e-6
    assert manifest(target)["metrics"]["steps"] == 4  # 12 examples / (2 processes x batch 4), 2 epochs


def test_demo_main_command(lf_python: str, tmp_path: Path) -> None:
    """The README's main job: `python -m lazytune.demo` trains + merges its embedded tiny model."""
    import sys

    out = tmp_path / "demo run"
    proc = subprocess.run([sys.executable, "-m", "lazytune.demo", "--out", str(out)], capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"merged model : {out / 'target' / 'lazyllm_merge'}" in proc.stdout
    loss = float(proc.stdout.split("final loss   : ")[1].split()[0])
    first = json.loads((out / "target" / "lazyllm_lora" / "trainer_log.jsonl").read_text().splitlines()[0])["loss"]
    assert loss < first  # it learned something
    # it ends by showing what training changed: a held-out prompt answered by both models, and the eval table
    assert "held-out prompt : 'Spell the digit 7'" in proc.stdout
    assert "\nbase model      : '" in proc.stdout and "\nfine-tuned      : '" in proc.stdout
    table = proc.stdout.split("(lazytune eval):\n")[1].splitlines()
    assert table[0].split() == ["metric", "base", "fine-tuned", "change"] and table[1].split()[0] == "loss"
    assert float(table[1].split()[2]) < float(table[1].split()[1])  # tuned loss below base on held-out records
    assert check_merged(lf_python, out / "model" / "Qwen2.5-tiny-demo", out / "target" / "lazyllm_merge")["generated"]


def test_ppo_with_a_reward_model(lf_python: str, model: Path, tmp_path: Path) -> None:
    """PPO trains in the llamafactory-ppo env (trl 0.9.6, via scripts/lf_ppo.py) against a reward model trained
    here; the LoRA merge runs in the main env."""
    env_python("llamafactory-ppo")
    reward = finetune.llamafactory(model, tmp_path / "rm", launcher=quiet(), stage="rm", finetuning_type="full",
                                   **{**FAST, "num_train_epochs": 1})(lf_data.pairs(tmp_path / "pairs.json", n=4))
    target = tmp_path / "ppo"
    trainer = finetune.llamafactory(model, target, launcher=quiet(), stage="ppo", reward_model=reward,
                                    reward_model_type="full", max_new_tokens=4, **{**FAST, "num_train_epochs": 1})
    merged = trainer(lf_data.alpaca(tmp_path / "prompts.json", n=8))
    assert (target / "lazyllm_lora" / "value_head.safetensors").is_file()
    assert check_merged(lf_python, model, Path(merged))["generated"] > 0
    assert manifest(target)["metrics"]["steps"] == 2


def test_rows_lf_drops_are_counted_and_strict_data_stops_before_training(lf_python: str, model: Path,
                                                                        tmp_path: Path) -> None:
    """LF's own loader, on data where it drops a record: the manifest says how many records went in and how many
    were trained on, with why and which; strict_data=True fails in the data step, before any training."""
    records = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
               for i in range(10)]  # fmt: skip
    records[3]["conversations"].reverse()  # gpt first: LF's converter skips it
    data = lf_data.write_records(tmp_path / "d.json", records)
    target = tmp_path / "counted"
    trainer = finetune.llamafactory(model, target, launcher=quiet(), **FAST)
    assert any("skip 1 of 10" in n for n in trainer.plan(data).notes)
    trainer(data)
    info = manifest(target)["data"]
    assert "data" not in manifest(target)["metrics"] and Run.load(target / "lazytune_run.json").metrics["data"] == info
    assert info["records_in"] == {str(data): 10} and info["examples_trained"] == 9
    (drop,) = info["dropped"]["d"].values()
    assert drop == {"count": 1, "first": [4]}
    with pytest.raises(DataError, match="strict_data=True"):  # seen when planning: refused before anything runs
        finetune.llamafactory(model, tmp_path / "strict", launcher=quiet(), strict_data=True, **FAST).plan(data)
    # drops only LF's preprocessing shows: the data step itself refuses them with --strict
    from lazytune.backends.base import script

    run_dir = next((target / "lazytune_runs").iterdir())
    proc = subprocess.run([lf_python, script("lf_data_check.py"), str(run_dir / "train.yaml"),
                           str(tmp_path / "report.json"), "--strict"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3 and "1 skipped by LF's converter" in proc.stdout, proc.stdout + proc.stderr


def test_trainset_and_valset_evaluates_on_the_second_file(model: Path, tmp_path: Path) -> None:
    """LazyLLM's `trainer(trainset, valset)`: the second file is LF's eval_dataset and is evaluated."""
    target = tmp_path / "with-eval"
    trainer = finetune.llamafactory(model, target, launcher=quiet(), **FAST)
    trainer(lf_data.alpaca(tmp_path / "train.json"), lf_data.alpaca(tmp_path / "val.json", n=4))
    results = json.loads((target / "lazyllm_lora" / "eval_results.json").read_text())
    assert isinstance(results["eval_loss"], float)


def test_predict_only_config_writes_predictions_into_the_target(lf_python: str, model: Path, tmp_path: Path) -> None:
    """A config like LF's nlg_eval/llama3_lora_predict.yaml: no training, no merge, predictions in the target."""
    probe = subprocess.run([lf_python, "-c", "import jieba, nltk, rouge_chinese"], capture_output=True, timeout=120)
    if probe.returncode:  # LF's predict_with_generate scores with them (LF's `metrics` extra)
        pytest.skip("the llamafactory env lacks jieba / nltk / rouge-chinese (LF's metrics extra)")
    trained = tmp_path / "trained"
    finetune.llamafactory(model, trained, launcher=quiet(), **FAST)(lf_data.alpaca(tmp_path / "a.json"))
    cfg = {"adapter_name_or_path": str(trained / "lazyllm_lora"), "stage": "sft", "do_predict": True,
           "finetuning_type": "lora", "template": "qwen", "cutoff_len": 64, "max_new_tokens": 4,
           "per_device_eval_batch_size": 2, "predict_with_generate": True, "report_to": "none"}  # fmt: skip
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(cfg))
    target = tmp_path / "predicted"
    result = finetune.llamafactory(model, target, launcher=quiet(), config_path=path)(
        lf_data.alpaca(tmp_path / "ask.json", n=4))
    assert result == str(target / "predictions")
    lines = (target / "predictions" / "generated_predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "predict" in json.loads(lines[0])
    assert not (target / "lazyllm_merge").exists()
