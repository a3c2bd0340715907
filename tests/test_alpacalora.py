"""finetune.alpacalora without ML: options, plan, and every bad input rejected before any process starts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from launchers import Step
from lazytune import finetune, launchers
from lazytune.backends.alpacalora.checks import min_prompt_tokens
from lazytune.backends.base import script
from lazytune.backends.prompts import TEMPLATES, load_template
from lazytune.errors import ConfigError, DataError, OptionsError, UnknownOptionError
from tests.helpers.alpaca import alpaca_records, write_alpaca

SMALL = {"batch_size": 4, "micro_batch_size": 2, "val_set_size": 2}


def model_of(tmp_path: Path, model_type: str) -> Path:
    model = tmp_path / f"model-{model_type}"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": model_type}))
    (model / "tokenizer.json").write_text("{}")
    return model


def nothing_written(target: Path) -> bool:
    return not target.exists() or not any(target.iterdir())


def test_defaults_are_lazyllm_s(tiny_folder_model: Path, tmp_path: Path) -> None:
    o = finetune.alpacalora(tiny_folder_model, tmp_path / "t").options
    expected = {"batch_size": 64, "micro_batch_size": 4, "num_epochs": 2, "learning_rate": 5e-4, "cutoff_len": 1030,
                "filter_nums": 1024, "val_set_size": 200, "lora_r": 8, "lora_alpha": 32, "lora_dropout": 0.05,
                "prompt_template_name": "alpaca", "train_on_inputs": True, "show_prompt": False,
                "lr_scheduler_type": "cosine",  # LazyLLM's copy (alpaca-lora's original: linear)
                "load_best_model_at_end": True}  # both upstreams, with a validation set  # fmt: skip
    assert {k: o[k] for k in expected} == expected
    assert o["lora_target_modules"] == ["q_proj", "v_proj"]  # from the Llama config, not InternLM's names
    assert o.get("deepspeed") is None and o.get("modules_to_save") is None
    lazyllm_style = finetune.alpacalora(tiny_folder_model, tmp_path / "t", deepspeed="",
                                        lora_target_modules="[wo,wqkv]", modules_to_save="[tok_embeddings,output]")
    assert lazyllm_style.options["lora_target_modules"] == ["wo", "wqkv"]
    assert lazyllm_style.options["modules_to_save"] == ["tok_embeddings", "output"]
    assert lazyllm_style.options.get("deepspeed") is None


def test_unknown_key_did_you_mean(tiny_folder_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownOptionError, match="did you mean 'learning_rate'"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", learnig_rate=1e-4)
    with pytest.raises(UnknownOptionError, match="cutoff_len"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", cutof_len=10)
    assert nothing_written(tmp_path / "t")


@pytest.mark.parametrize(("model_type", "targets"), [
    ("llama", ["q_proj", "v_proj"]), ("qwen2", ["q_proj", "v_proj"]), ("internlm2", ["wqkv", "wo"]),
    ("chatglm", ["query_key_value"]), ("baichuan", ["W_pack"]),
])  # fmt: skip
def test_lora_targets_follow_the_architecture(tmp_path: Path, model_type: str, targets: list[str]) -> None:
    trainer = finetune.alpacalora(model_of(tmp_path, model_type), tmp_path / "t")
    assert trainer.options["lora_target_modules"] == targets


def test_lora_targets_unknown_architecture_and_explicit(tmp_path: Path) -> None:
    model = model_of(tmp_path, "brand_new_arch")
    with pytest.raises(ConfigError, match="lora_target_modules.*all-linear"):
        finetune.alpacalora(model, tmp_path / "t")
    trainer = finetune.alpacalora(model, tmp_path / "t", lora_target_modules="[wo,wqkv]")
    assert trainer.options["lora_target_modules"] == ["wo", "wqkv"]


def test_plan_steps(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    (tiny_folder_model / "tokenizer.model").write_text("spm")
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "t", cp_files=["tokeniz*", "*.model"],
                                  model_name="tiny-7B", nccl_port=19123, train_on_inputs=False, **SMALL)
    plan = trainer.plan(alpaca_file)
    train, merge = plan.steps
    assert train.name == "train" and train.distributed and merge.name == "merge" and not merge.distributed
    assert train.argv[1].endswith("alpacalora_train.py") and merge.argv[1].endswith("merge_lora.py")
    args = list(train.argv)
    assert args[args.index("--data") + 1] == str(alpaca_file)
    assert args[args.index("--output-dir") + 1] == str(plan.target.lora)
    assert args[args.index("--train-on-inputs") + 1] == "false"
    assert args[args.index("--run-name") + 1] == "tiny-7B"
    assert args[args.index("--prompt-template") + 1] == str(TEMPLATES / "alpaca.json")
    assert train.env == {"MASTER_PORT": "19123"}
    assert "--cp-files=tokeniz*" in merge.argv and "--cp-files=*.model" in merge.argv
    assert merge.argv[merge.argv.index("--output") + 1] == str(plan.target.merge) == str(plan.result)
    assert "12 records; gradient accumulation 2 over 1 process(es)" in plan.notes
    assert nothing_written(tmp_path / "t")  # planning writes nothing


def test_data_from_the_data_path_option(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "t", data_path=str(alpaca_file), **SMALL)
    assert trainer.plan().data == [alpaca_file]
    with pytest.raises(ConfigError, match="data given twice"):
        trainer.plan(alpaca_file)


@pytest.mark.parametrize(("record", "message"), [
    ({"input": "x", "output": "y"}, "no 'instruction'"),
    ({"instruction": "x", "input": "y"}, "no 'output'"),
    ({"question": "x", "answer": "y"}, "no 'instruction' and no 'output'"),
    ({"instruction": "x", "output": 3}, "'output' must be a string"),
    ({"instruction": "x", "input": ["a"], "output": "y"}, "'input' must be a string"),
])  # fmt: skip
def test_bad_records_name_file_and_line(tiny_folder_model: Path, tmp_path: Path, record: dict, message: str) -> None:
    records = alpaca_records()
    records.insert(5, record)
    data = write_alpaca(tmp_path / "data.jsonl", records, jsonl=True)
    target = tmp_path / "t"
    trainer = finetune.alpacalora(tiny_folder_model, target, **SMALL)
    with pytest.raises(DataError, match=message) as info:
        trainer(data)
    assert info.value.line == 6 and str(data) in str(info.value)
    assert nothing_written(target)


def test_plain_text_data_rejected(tiny_folder_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "notes.txt"
    data.write_text("just some text\n")
    with pytest.raises(DataError, match="needs JSON records"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", **SMALL).plan(data)


def test_cutoff_len_shorter_than_the_template(tiny_folder_model: Path, tmp_path: Path) -> None:
    fixed = min_prompt_tokens(load_template(TEMPLATES / "alpaca.json"))
    with pytest.raises(OptionsError, match=f"cutoff_len=10 leaves no response tokens.*at least {fixed} tokens"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", cutoff_len=10)
    short = min_prompt_tokens(load_template(TEMPLATES / "alpaca_short.json"))
    assert short < 10 < fixed  # the same cutoff passes this cheap check with the short template
    finetune.alpacalora(tiny_folder_model, tmp_path / "t", cutoff_len=10, prompt_template_name="alpaca_short")
    assert nothing_written(tmp_path / "t")


def test_val_set_size_larger_than_the_data(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "t", batch_size=4, micro_batch_size=2)
    with pytest.raises(OptionsError, match="val_set_size=200 leaves no training data: the data has 12 records"):
        trainer(alpaca_file)
    assert nothing_written(tmp_path / "t")


def test_batch_size_must_split_over_processes(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="not a multiple of micro_batch_size=3"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", batch_size=4, micro_batch_size=3)
    with pytest.raises(OptionsError, match="micro_batch_size=8 is larger than batch_size=4"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", batch_size=4, micro_batch_size=8)
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "t", launcher=launchers.local(nproc=3), **SMALL)
    with pytest.raises(OptionsError, match=r"micro_batch_size x processes = 2 x 3"):
        trainer.plan(alpaca_file)
    plan = finetune.alpacalora(tiny_folder_model, tmp_path / "t", launcher=launchers.local(nproc=2), **SMALL).plan(
        alpaca_file)
    assert "12 records; gradient accumulation 1 over 2 process(es)" in plan.notes


def test_templates(tiny_folder_model: Path, tmp_path: Path) -> None:
    shipped = sorted(p.stem for p in TEMPLATES.glob("*.json"))
    assert shipped == ["alpaca", "alpaca_legacy", "alpaca_short", "puyu", "vigogne"]
    for name in shipped:
        load_template(TEMPLATES / f"{name}.json")
    shipped_list = "alpaca, alpaca_legacy, alpaca_short, puyu, vigogne"
    with pytest.raises(OptionsError, match=f"unknown prompt_template_name 'alpacca'.*{shipped_list}"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", prompt_template_name="alpacca")
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"prompt_input": "Q: {instruction} {input}\nA: ", "prompt_no_input": "Q: {instruction}"
                                "\nA: "}))  # fmt: skip
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "t", prompt_template_name=str(mine), cutoff_len=8)
    assert trainer.template_path == mine
    mine.write_text(json.dumps({"prompt_input": "Q: {question}", "prompt_no_input": "Q: {instruction}"}))
    with pytest.raises(OptionsError, match=r"no \{instruction\} placeholder"):
        finetune.alpacalora(tiny_folder_model, tmp_path / "t", prompt_template_name=str(mine))


def test_other_bad_inputs(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    t = tmp_path / "t"
    with pytest.raises(ConfigError, match="model_name must be a plain name"):
        finetune.alpacalora(tiny_folder_model, t, model_name="../evil")
    with pytest.raises(ConfigError, match="cp_files"):
        finetune.alpacalora(tiny_folder_model, t, cp_files="../secrets/*")
    with pytest.raises(OptionsError, match="deepspeed config not found"):
        finetune.alpacalora(tiny_folder_model, t, deepspeed=str(tmp_path / "ds.json"))
    ds = tmp_path / "ds.json"
    ds.write_text("{}")
    with pytest.raises(OptionsError, match="deepspeed needs GPUs"):
        finetune.alpacalora(tiny_folder_model, t, deepspeed=str(ds), **SMALL).plan(alpaca_file)
    with pytest.raises(OptionsError, match="needs overwrite=True|pass overwrite=True"):
        finetune.alpacalora(tiny_folder_model, t, resume_from_checkpoint=True)
    with pytest.raises(OptionsError, match="no checkpoint-N folder"):
        finetune.alpacalora(tiny_folder_model, t, resume_from_checkpoint=True, overwrite=True, **SMALL).plan(
            alpaca_file)
    with pytest.raises(OptionsError, match=r"cp_files '\*.tiktoken' match no file in"):
        finetune.alpacalora(tiny_folder_model, t, cp_files=["tokeniz*", "*.tiktoken"], **SMALL).plan(alpaca_file)
    finetune.alpacalora(tiny_folder_model, t, cp_files="", **SMALL).plan(alpaca_file)  # copy nothing, on purpose
    (tiny_folder_model / "tokenizer.json").unlink()
    (tiny_folder_model / "tokenizer_config.json").unlink()
    with pytest.raises(OptionsError, match="has no tokenizer"):
        finetune.alpacalora(tiny_folder_model, t, cp_files="", **SMALL).plan(alpaca_file)
    with pytest.raises(OptionsError, match="nccl_port must be a TCP port"):
        finetune.alpacalora(tiny_folder_model, t, nccl_port=80)
    with pytest.raises(OptionsError, match="num_epochs must be > 0"):
        finetune.alpacalora(tiny_folder_model, t, num_epochs=0)
    with pytest.raises(OptionsError, match=r"needs save_steps \(300\) to be a multiple of eval_steps \(200\)"):
        finetune.alpacalora(tiny_folder_model, t, save_steps=300)
    finetune.alpacalora(tiny_folder_model, t, save_steps=300, load_best_model_at_end=False)
    finetune.alpacalora(tiny_folder_model, t, save_steps=300, val_set_size=0)  # no evaluation: nothing to choose
    assert nothing_written(t)


def test_keeps_checkpoints_only_when_resuming(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "t"
    (target / "lazyllm_lora" / "checkpoint-3").mkdir(parents=True)
    (target / "lazyllm_merge").mkdir()
    (target / "lazyllm_merge" / "config.json").write_text("{}")
    trainer = finetune.alpacalora(tiny_folder_model, target, resume_from_checkpoint=True, overwrite=True, **SMALL)
    plan = trainer.plan(alpaca_file)
    trainer.prepare_target(plan)
    assert (target / "lazyllm_lora" / "checkpoint-3").is_dir() and not (target / "lazyllm_merge").exists()
    fresh = finetune.alpacalora(tiny_folder_model, target, overwrite=True, **SMALL)
    fresh.prepare_target(fresh.plan(alpaca_file))
    assert not (target / "lazyllm_lora").exists()


def test_local_launcher_honours_a_pinned_master_port(tmp_path: Path) -> None:
    """nccl_port reaches torchrun: a distributed step's MASTER_PORT becomes --master_port."""
    step = Step("s", [sys.executable, "-c", "pass"], log=tmp_path / "s.log", env={"MASTER_PORT": "19123"},
                distributed=True)  # fmt: skip
    job = launchers.local(nproc=2, stream=False).submit([step], "port")
    job.wait(timeout=60, raise_on_failure=False)
    first = (tmp_path / "s.log").read_text().splitlines()[0]
    assert "torch.distributed.run" in first and "--master_port=19123" in first


def run_merge_script(*args: str) -> subprocess.CompletedProcess:
    """merge_lora.py's checks run before torch is imported: this interpreter is enough to reach them."""
    return subprocess.run([sys.executable, script("merge_lora.py"), *args], capture_output=True, text=True, timeout=60)


def test_merge_script_refuses_bad_folders(tiny_folder_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    proc = run_merge_script("--base", str(tiny_folder_model), "--adapter", str(tmp_path), "--output", str(out))
    assert proc.returncode == 2 and "has no adapter_config.json" in proc.stderr
    proc = run_merge_script("--base", str(tmp_path), "--adapter", str(tmp_path), "--output", str(out))
    assert proc.returncode == 2 and "has no config.json" in proc.stderr
    (tmp_path / "adapter_config.json").write_text("{}")
    proc = run_merge_script("--base", str(tiny_folder_model), "--adapter", str(tmp_path), "--output", str(tmp_path))
    assert proc.returncode == 2 and "must differ" in proc.stderr
    assert not out.exists()


def test_merge_script_copies_globs_and_never_overwrites_merged_files(tiny_folder_model: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("merge_lora", script("merge_lora.py"))
    merge_lora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_lora)
    (tiny_folder_model / "tokenizer.model").write_text("spm")
    (tiny_folder_model / "tokenizer_dir").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"merged": true}')
    copied = merge_lora.copy_matching(tiny_folder_model, ["tokeniz*", "*.json"], out)
    assert sorted(copied) == ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]  # no folder, no config
    assert json.loads((out / "config.json").read_text()) == {"merged": True}


def test_resume_skips_checkpoints_killed_while_saving(tmp_path: Path) -> None:
    """SIGKILL during a save can leave trainer_state.json missing, empty or cut short: resume uses an older one."""
    spec = importlib.util.spec_from_file_location("alpacalora_train", script("alpacalora_train.py"))
    trainer_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer_script)
    for step, state in ((2, '{"global_step": 2}'), (3, '{"global_step": 3}'), (4, ""), (5, '{"global_st'), (6, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert trainer_script.last_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    assert trainer_script.last_checkpoint(tmp_path / "checkpoint-6") is None
