"""finetune.dummy as LazyLLM's stand-in: any base name, any keyword, no data; still real processes and a manifest.

LazyLLM (lazyllm/components/finetune/base.py): `DummyFinetune(base_model='base', target_path='target', *,
launcher=..., **kw)` echoes its keywords. Its own tests call `finetune_method(lazyllm.finetune.dummy).trainset("")`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from lazytune import DataError, finetune, launchers
from lazytune.backends.dummy import DummyKeywordsWarning

QUIET = launchers.local(stream=False)


def manifest(target: Path) -> dict:
    return json.loads((target / "lazytune_run.json").read_text())


def test_any_base_name_any_keyword_runs_real_processes(tmp_path: Path) -> None:
    target = tmp_path / "t"
    with pytest.warns(DummyKeywordsWarning, match=r"'custom_arg'.*'lr_rate' \(did you mean 'learning_rate'\?\)"):
        trainer = finetune.dummy("internlm2-chat-7b", target, launcher=QUIET, custom_arg="custom_value",
                                 lr_rate=1e-3, a=["f1", "f2"])  # fmt: skip
    result = trainer("")  # LazyLLM's tests pass trainset("")
    assert result == str(target / "lazyllm_merge")
    assert (target / "lazyllm_lora" / "adapter_config.json").is_file()
    merged_from = json.loads((target / "lazyllm_merge" / "merged_from.json").read_text())
    assert merged_from["copied"] == []  # no base folder: nothing to copy
    m = manifest(target)
    assert m["state"] == "COMPLETED" and [s["exit_code"] for s in m["job"]["steps"]] == [0, 0]
    options = m["plan"]["options"]
    assert options["custom_arg"] == "custom_value" and options["a"] == ["f1", "f2"] and options["lr_rate"] == 1e-3
    notes = " ".join(m["plan"]["notes"])
    assert "not a folder here" in notes and "does not use" in notes


def test_lazyllm_defaults_no_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`DummyFinetune()` in LazyLLM: base 'base', target 'target' (under the target root)."""
    monkeypatch.setenv("LAZYTUNE_TRAIN_TARGET_ROOT", str(tmp_path))
    assert finetune.dummy(launcher=QUIET)() == str(tmp_path / "target" / "lazyllm_merge")


def test_unjsonable_keyword_recorded_as_repr(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DummyKeywordsWarning)
        plan = finetune.dummy("base", tmp_path / "t", launcher=QUIET, obj=object()).plan()
    assert plan.options["obj"].startswith("<object object")
    json.dumps(plan.to_dict())  # the manifest can hold it


def test_existing_folder_is_used(tiny_folder_model: Path, tmp_path: Path) -> None:
    trainer = finetune.dummy(tiny_folder_model, tmp_path / "t", launcher=QUIET)
    assert trainer.base_model == tiny_folder_model.resolve() and trainer.notes == []
    trainer()
    assert (tmp_path / "t" / "lazyllm_merge" / "tokenizer.json").is_file()


def test_known_option_with_a_wrong_type_is_still_an_error(tmp_path: Path) -> None:
    from lazytune import OptionTypeError

    with pytest.raises(OptionTypeError, match="num_train_epochs"):
        finetune.dummy("base", tmp_path / "t", num_train_epochs="many")


@pytest.mark.parametrize("data", ["", "   ", [""], []])
def test_blank_data_is_a_data_error_for_real_backends(data: object, alpaca_file: Path, tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "tokenizer.json").write_text("{}")
    trainer = finetune.alpacalora(model, tmp_path / "t", launcher=QUIET, val_set_size=2)
    with pytest.raises(DataError, match="empty data path|no training data"):
        trainer.plan(data)
    with pytest.raises(DataError, match="empty data path|no training data"):
        finetune.dummy(model, tmp_path / "t2", strict=True, launcher=QUIET).plan(data or [""])


def test_blank_data_never_reads_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lazytune.data import resolve_data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "stray.json").write_text('[{"instruction": "x", "output": "y"}]')
    with pytest.raises(DataError, match="never read as the current folder"):
        resolve_data("")
    with pytest.raises(DataError, match=r"item 2 of the list"):
        resolve_data(["stray.json", " "])
