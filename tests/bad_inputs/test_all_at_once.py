"""One error lists every problem found before anything starts: a missing model folder, a typo'd keyword and bad data
together (Python API and command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lazytune import ModelNotFoundError, UnknownOptionError, finetune, launchers
from lazytune.cli import main

from .backends import nothing_started


def bad_data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    return path


def test_model_keyword_and_data_path_in_one_error(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with nothing_started(target), pytest.raises(ModelNotFoundError) as info:
        finetune.alpacalora(tmp_path / "no-such-model", target, learning_rat=1e-4, data_path=tmp_path / "missing.json",
                            launcher=launchers.local(stream=False))  # fmt: skip
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "base model not found" in text and "did you mean 'learning_rate'" in text and "missing.json" in text
    assert len(info.value.problems) == 3


def test_model_and_keyword_for_every_backend(tmp_path: Path) -> None:
    for name in ("llamafactory", "alpacalora", "flagembedding", "collie", "auto"):
        with pytest.raises(ModelNotFoundError) as info:
            getattr(finetune, name)(tmp_path / "no-such-model", tmp_path / "out", learning_rat=1e-4)
        assert "did you mean" in str(info.value) and "base model not found" in str(info.value), name


def test_keyword_and_data_path_with_a_good_model(tmp_path: Path, tiny_folder_model: Path) -> None:
    with pytest.raises(UnknownOptionError) as info:
        finetune.alpacalora(tiny_folder_model, tmp_path / "out", learning_rat=1e-4, data_path=bad_data(tmp_path))
    assert "learning_rate" in str(info.value) and "train.jsonl, line 2" in str(info.value)


def test_command_line_lists_model_keyword_and_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["plan", "llamafactory", "--base", str(tmp_path / "no-such-model"), "--target", str(tmp_path / "o"),
                 "--data", str(bad_data(tmp_path)), "learning_rat=1e-4"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "base model not found" in err and "did you mean 'learning_rate'" in err and "line 2" in err, err


def test_single_problem_message_unchanged(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="never downloads") as info:
        finetune.llamafactory(tmp_path / "no-such-model", tmp_path / "out")
    assert "problem(s)" not in str(info.value)
    json.dumps(str(info.value))


def test_bad_data_and_a_taken_target_together(tmp_path: Path, tiny_folder_model: Path) -> None:
    from lazytune import DataError

    target = tmp_path / "taken"
    target.mkdir()
    (target / "thesis.tex").write_text("do not lose")
    trainer = finetune.alpacalora(tiny_folder_model, target, val_set_size=2)
    with nothing_started(target), pytest.raises(DataError) as info:
        trainer(tmp_path / "missing.json")
    assert "missing.json" in str(info.value) and "overwrite=True" in str(info.value)
