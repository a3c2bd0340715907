"""LazyLLM's `trainer(trainset, valset)`: alpacalora evaluates on the valset's records; backends without evaluation
on a file refuse it clearly (LazyLLM accepted and ignored it); the dummy records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import launchers
from lazytune import ConfigError, DataError, OptionsError, finetune
from tests.helpers.alpaca import alpaca_records, write_alpaca


def cpu() -> launchers.LocalLauncher:
    return launchers.local(ngpus=0, stream=False)


def val_file(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "val.json"
    path.write_text(json.dumps([{"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(n)]))
    return path


def test_alpacalora_valset_goes_to_the_trainer(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "o", launcher=cpu(), batch_size=4, micro_batch_size=2,
                                  val_set_size=200)  # fmt: skip
    plan = trainer.plan(alpaca_file, val_file(tmp_path))  # 12 records < val_set_size: fine, nothing is split off
    train = plan.steps[0].argv
    assert train[train.index("--val-data") + 1] == str(val_file(tmp_path).resolve())
    assert plan.to_dict()["eval_data"] == [str(val_file(tmp_path).resolve())]
    assert any("val_set_size is not used" in n for n in plan.notes)


def test_alpacalora_valset_checks_save_and_eval_steps(tiny_folder_model: Path, alpaca_file: Path,
                                                       tmp_path: Path) -> None:
    """load_best_model_at_end picks a checkpoint by its eval loss: with a valset too, before anything starts."""
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "o", launcher=cpu(), batch_size=4, micro_batch_size=2,
                                  val_set_size=0, save_steps=3, eval_steps=2)  # fmt: skip
    trainer.plan(alpaca_file)  # no evaluation: nothing to check
    with pytest.raises(OptionsError, match=r"save_steps \(3\) to be a multiple of eval_steps \(2\)"):
        trainer.plan(alpaca_file, val_file(tmp_path))


def test_alpacalora_bad_valset_names_file_and_line(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path):
    bad = tmp_path / "val.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    trainer = finetune.alpacalora(tiny_folder_model, tmp_path / "o", launcher=cpu(), val_set_size=2)
    with pytest.raises(DataError, match="val.jsonl, line 2"):
        trainer.plan(alpaca_file, bad)


@pytest.mark.parametrize("backend", ["collie", "flagembedding"])
def test_refused_where_there_is_no_evaluation_file(backend: str, tmp_path: Path, alpaca_file: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    kind = {"collie": '{"model_type": "llama"}', "flagembedding": '{"architectures": ["BertModel"]}'}[backend]
    (model / "config.json").write_text(kind)
    (model / "tokenizer.json").write_text("{}")
    trainer = getattr(finetune, backend)(model, tmp_path / "o", launcher=cpu())
    with pytest.raises(ConfigError, match="takes no evaluation data file"):
        trainer.plan(alpaca_file, val_file(tmp_path))


def test_dummy_records_the_valset(tmp_path: Path, alpaca_file: Path) -> None:
    plan = finetune.dummy("base", tmp_path / "o", launcher=cpu()).plan(alpaca_file, val_file(tmp_path))
    assert plan.eval_data == [val_file(tmp_path).resolve()]
    with pytest.raises(DataError, match="data must be a path"):
        finetune.dummy("base", tmp_path / "o", launcher=cpu()).plan(alpaca_file, 3)
    with pytest.raises(ConfigError, match="takes no evaluation data"):
        finetune.dummy(tmp_path, tmp_path / "o", launcher=cpu(), strict=True).plan(alpaca_file, val_file(tmp_path))


@pytest.mark.slow
def test_alpacalora_evaluates_on_the_valset_for_real(tmp_path: Path) -> None:
    from tests.helpers.models import env_python, tiny_llama

    python = env_python("alpacalora")
    model = tiny_llama(tmp_path / "models", python)
    data = write_alpaca(tmp_path / "train.json", alpaca_records()[:8])
    trainer = finetune.alpacalora(model, tmp_path / "o", launcher=cpu(), batch_size=4, micro_batch_size=2,
                                  num_epochs=1, warmup_steps=0, logging_steps=1, eval_steps=1, cutoff_len=128)
    trainer(data, val_file(tmp_path, 3))
    stats = json.loads((tmp_path / "o" / "lazyllm_lora" / "train_data_stats.json").read_text())
    assert stats["train_samples"] == 8 and stats["val_samples"] == 3
    m = json.loads((tmp_path / "o" / "lazytune_run.json").read_text())
    assert m["state"] == "COMPLETED" and m["metrics"]["final_eval_loss"] is not None
