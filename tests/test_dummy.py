"""finetune.dummy through the whole pipeline with real processes: plan, run, manifest, failures, targets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lazytune import JobFailed, finetune, launchers
from lazytune.errors import ModelNotFoundError, TargetExistsError, UnknownOptionError

QUIET = launchers.local(stream=False)


def test_plan_prints_argv_and_files_and_runs_nothing(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path):
    target = tmp_path / "out"
    plan = finetune.dummy(tiny_folder_model, target, num_train_epochs=2, launcher=QUIET).plan(alpaca_file)
    text = str(plan)
    assert "argv[0] =" in text and "dummy_train.py" in text and "'--epochs'" in text and "'2'" in text
    assert "--- file" in text and '"num_train_epochs": 2' in text
    assert [s.name for s in plan.steps] == ["train", "merge"]
    assert not target.exists(), "plan() must not write anything"
    assert plan.to_dict()["steps"][0]["argv"][0] == plan.steps[0].argv[0]


def test_run_writes_layout_and_manifest(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path):
    target = tmp_path / "out"
    result = finetune.dummy(tiny_folder_model, target, launcher=QUIET)(alpaca_file)
    assert result == str(target / "lazyllm_merge")
    assert (target / "lazyllm_lora" / "adapter_config.json").is_file()
    assert (target / "lazyllm_merge" / "tokenizer.json").is_file()
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED" and manifest["backend"] == "dummy"
    assert [s["exit_code"] for s in manifest["job"]["steps"]] == [0, 0]
    assert manifest["metrics"]["final_loss"] == pytest.approx(2 / 3, abs=1e-3)
    assert manifest["options"] if "options" in manifest else manifest["plan"]["options"]["num_train_epochs"] == 1
    run_dir = Path(manifest["plan"]["run_dir"])
    assert (run_dir / "dummy_config.json").is_file() and (run_dir / "logs" / "train.log").is_file()


def test_failing_train_stops_before_merge(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path):
    target = tmp_path / "out"
    with pytest.raises(JobFailed) as info:
        finetune.dummy(tiny_folder_model, target, fail="train", launcher=QUIET)(alpaca_file)
    assert info.value.step == "train" and info.value.exit_code == 3
    assert "failing on purpose" in info.value.log_tail
    assert not (target / "lazyllm_merge").exists()
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "FAILED" and manifest["job"]["failed_step"] == "train"
    assert "exited with 3" in manifest["reason"]


def test_failing_merge(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path):
    with pytest.raises(JobFailed) as info:
        finetune.dummy(tiny_folder_model, tmp_path / "o", fail="merge", launcher=QUIET)(alpaca_file)
    assert info.value.step == "merge"


def test_target_checks(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path):
    target = tmp_path / "out"
    finetune.dummy(tiny_folder_model, target, launcher=QUIET)(alpaca_file)
    before = sorted(p.name for p in (target / "lazytune_runs").iterdir())
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        finetune.dummy(tiny_folder_model, target, launcher=QUIET)(alpaca_file)
    assert sorted(p.name for p in (target / "lazytune_runs").iterdir()) == before, "a refused run wrote nothing"
    trainer = finetune.dummy(tiny_folder_model, target, overwrite=True, launcher=QUIET)
    assert trainer(alpaca_file) == trainer(alpaca_file)  # calling twice works


def test_non_empty_foreign_folder_is_protected(tiny_folder_model: Path, tmp_path: Path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("do not lose")
    with pytest.raises(TargetExistsError):
        finetune.dummy(tiny_folder_model, target, launcher=QUIET).plan()


def test_target_named_lazyllm_lora_uses_sibling(tiny_folder_model: Path, tmp_path: Path):
    root = tmp_path / "job"
    root.mkdir()
    (root / "other.txt").write_text("kept")
    result = finetune.dummy(tiny_folder_model, root / "lazyllm_lora", launcher=QUIET)()
    assert result == str(root / "lazyllm_merge") and (root / "lazyllm_lora" / "adapter_config.json").exists()


def test_explicit_merge_path(tiny_folder_model: Path, tmp_path: Path):
    result = finetune.dummy(tiny_folder_model, tmp_path / "t", merge_path=tmp_path / "merged", launcher=QUIET)()
    assert result == str(tmp_path / "merged") and (tmp_path / "merged" / "merged_from.json").exists()


def test_relative_target_uses_target_root(tiny_folder_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LAZYTUNE_TRAIN_TARGET_ROOT", str(tmp_path / "root"))
    assert finetune.dummy(tiny_folder_model, "exp1", launcher=QUIET)().startswith(str(tmp_path / "root" / "exp1"))


def test_bad_inputs_before_any_process(tiny_folder_model: Path, tmp_path: Path):
    # strict=True checks like a real backend (the default is LazyLLM's lenient stand-in: tests/test_dummy_lazyllm.py)
    with pytest.raises(UnknownOptionError, match="did you mean 'num_train_epochs'"):
        finetune.dummy(tiny_folder_model, tmp_path / "o", num_train_epoch=2, strict=True)
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        finetune.dummy(tmp_path / "no-such-model", tmp_path / "o", strict=True)
    assert not (tmp_path / "o").exists()


def test_model_found_via_model_path(tiny_folder_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LAZYTUNE_MODEL_PATH", str(tiny_folder_model.parent))
    monkeypatch.chdir(tmp_path)
    assert finetune.dummy(tiny_folder_model.name, tmp_path / "o").base_model == tiny_folder_model.resolve()


def test_async_run_and_cancel(tiny_folder_model: Path, tmp_path: Path):
    trainer = finetune.dummy(tiny_folder_model, tmp_path / "o", sleep=5, launcher=launchers.local(sync=False,
                                                                                                 stream=False))
    run = trainer()
    assert run.state in ("PENDING", "RUNNING")
    time.sleep(0.5)
    run.cancel()
    with pytest.raises(JobFailed):
        run.wait()
    manifest = json.loads((tmp_path / "o" / "lazytune_run.json").read_text())
    assert manifest["state"] == "CANCELLED"


def test_other_backends_say_not_implemented_or_work(tiny_folder_model: Path, tmp_path: Path):
    for name in ("llamafactory", "alpacalora", "collie", "flagembedding", "auto"):
        assert callable(getattr(finetune, name))


def test_launchers_exposed():
    assert launchers.empty().__class__ is launchers.local().__class__
