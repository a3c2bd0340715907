"""chat / eval without a backend environment: metrics, which model a run left, bad input (exit 2 before any job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lazytune.cli import main
from lazytune.errors import ConfigError
from lazytune.evaluate import brief, change, ranking_metrics, table, tuned_model
from lazytune.run import Run
from lazytune.text_metrics import bleu4, exact_match, rouge_l, score, words


# -- metrics -----------------------------------------------------------------------------------------------------------
def test_text_metrics() -> None:
    assert exact_match(" 3 3 3", "3 3 3 ") == 100.0 and exact_match("3", "4") == 0.0
    assert rouge_l("a b c", "a b c") == pytest.approx(100.0)
    assert rouge_l("a x c", "a b c") == pytest.approx(100 * 2 / 3)  # LCS 2 of 3 words each side
    assert rouge_l("", "a") == 0.0
    assert words("今天 good day") == ["今", "天", "good", "day"]
    assert bleu4("hello world", "hello world") == pytest.approx(100.0)
    # values NLTK's sentence_bleu(..., SmoothingFunction().method3) gives (checked with nltk 3.10.4)
    assert bleu4("abc", "abcd") == pytest.approx(60.25286104785453, abs=1e-9)
    assert bleu4("the cat sat", "the cat sat on the mat") == pytest.approx(36.787944117144235, abs=1e-9)
    assert bleu4("", "x") == 0.0 and bleu4("x", "y") == 0.0
    assert score(["1 1 1", "2"], ["1 1 1", "3"]) == {"exact_match": 50.0, "rouge-l": 50.0, "bleu-4": 50.0}
    assert score([], []) == {}


def test_bleu4_matches_nltk_where_installed() -> None:
    nltk = pytest.importorskip("nltk.translate.bleu_score")
    for pred, ref in [("abc", "abcd"), ("the cat sat", "the cat sat on the mat"), ("aab", "abab ba"), ("a", "a")]:
        theirs = 100 * nltk.sentence_bleu([list(ref)], list(pred), smoothing_function=nltk.SmoothingFunction().method3)
        assert bleu4(pred, ref) == pytest.approx(theirs, abs=1e-9)


def test_ranking_metrics() -> None:
    rows = [{"pos": [0.9], "neg": [0.1, 0.2]},          # positive first: rank 1
            {"pos": [0.5], "neg": [0.6, 0.1]},          # rank 2
            {"pos": [0.3, 0.8], "neg": [0.5, 0.5, 0.9]}]  # ranks 2 and 5 (ties count against the positive)
    got = ranking_metrics(rows, ks=(1, 2, 5))
    assert got["recall@1"] == pytest.approx(1 / 3)
    assert got["recall@2"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert got["recall@5"] == pytest.approx(1.0)
    assert got["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert ranking_metrics([]) == {}


def test_table_and_brief() -> None:
    report = {"kind": "llm", "records": 4, "data": ["d.json"], "max_samples": None, "notes": ["merge failed"],
              "base": {"loss": 7.0, "perplexity": 1096.6, "tokens": 10}, "tuned": {"loss": 5.0, "perplexity": 148.4,
                                                                                   "tokens": 10}}  # fmt: skip
    report["change"] = change(report["base"], report["tuned"])
    assert report["change"] == {"loss": -2.0, "perplexity": pytest.approx(-948.2)}
    text = table(report)
    assert text.splitlines()[0].split() == ["metric", "base", "fine-tuned", "change"]
    assert text.splitlines()[1].split() == ["loss", "7", "5", "-2", "(better)"] and "note: merge failed" in text
    assert brief(report) == "loss 7->5"
    assert brief({"kind": "embed", "base": {"mrr": 0.5}, "tuned": {"mrr": 0.75}}) == "mrr 0.5->0.75"


# -- which model a run left --------------------------------------------------------------------------------------------
def fake_run(tmp_path: Path, backend: str = "llamafactory", state: str = "COMPLETED", merge: bool = True,
             adapter: bool = True, exit_codes: tuple[int | None, ...] = (0, 0)) -> Run:
    """A manifest and folders shaped like a finished run (weights are empty files: nothing is loaded here)."""
    target, base = tmp_path / "target", tmp_path / "base"
    for folder in (base, *([target / "lazyllm_merge"] if merge else [])):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
    if adapter:
        (target / "lazyllm_lora").mkdir(parents=True)
        (target / "lazyllm_lora" / "adapter_config.json").write_text("{}")
    run_dir = target / "lazytune_runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "train.yaml").write_text("stage: sft\ntemplate: qwen\n")
    names = ("train", "export")
    data = {"run_id": "r1", "backend": backend, "state": state,
            "job": {"steps": [{"name": n, "exit_code": c} for n, c in zip(names, exit_codes, strict=False)]},
            "plan": {"base_model": str(base), "run_dir": str(run_dir), "options": {},
                     "target": {"root": str(target), "lora": str(target / "lazyllm_lora"),
                                "merge": str(target / "lazyllm_merge")}, "steps": []}}  # fmt: skip
    (run_dir / "lazytune_run.json").write_text(json.dumps(data))
    (target / "lazytune_run.json").write_text(json.dumps(data))
    return Run.load(run_dir / "lazytune_run.json")


def test_tuned_model_prefers_the_merge(tmp_path: Path) -> None:
    model = tuned_model(fake_run(tmp_path))
    assert model.tuned == tmp_path / "target" / "lazyllm_merge" and model.adapter is None and not model.notes
    assert model.extra["template"] == "qwen" and model.kind == "llm"


def test_failed_merge_falls_back_to_base_plus_adapter(tmp_path: Path) -> None:
    model = tuned_model(fake_run(tmp_path, state="FAILED", merge=False, exit_codes=(0, 1)))
    assert model.tuned == tmp_path / "base" and model.adapter == tmp_path / "target" / "lazyllm_lora"
    assert "the merge step failed (exit code 1)" in model.notes[0]
    assert model.models()[1] == {"name": "tuned", "path": str(tmp_path / "base"),
                                 "adapter": str(tmp_path / "target" / "lazyllm_lora")}  # fmt: skip


def test_full_fine_tune_whose_copy_failed_uses_the_trained_folder(tmp_path: Path) -> None:
    record = fake_run(tmp_path, state="FAILED", merge=False, adapter=False, exit_codes=(0, 1))
    lora = tmp_path / "target" / "lazyllm_lora"
    lora.mkdir()
    (lora / "config.json").write_text("{}")
    (lora / "model.safetensors").write_bytes(b"")
    model = tuned_model(record)
    assert model.tuned == lora and model.adapter is None and "holds no model" in model.notes[0]


@pytest.mark.parametrize(("kw", "message"), [
    (dict(state="FAILED", exit_codes=(1, None)), "training did not finish"),
    (dict(state="FAILED", merge=False, adapter=False, exit_codes=(0, 1)), "left no model to load"),
    (dict(backend="dummy"), "not dummy"),
])  # fmt: skip
def test_no_usable_model_is_a_config_error(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tuned_model(fake_run(tmp_path, **kw))


def test_cli_bad_inputs_exit_2_before_any_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(tmp_path, state="FAILED", exit_codes=(1, None))
    target = str(tmp_path / "target")
    assert main(["chat", target, "--prompt", "hi"]) == 2
    assert "training did not finish" in capsys.readouterr().err
    assert main(["chat", target, "--prompt", ""]) == 2
    assert "--prompt is empty" in capsys.readouterr().err
    assert main(["chat", target, "--query", "q"]) == 2
    assert "--query and --passages go together" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere"), "--data", "x.json"]) == 2
    assert "no run" in capsys.readouterr().err
    assert not (tmp_path / "target" / "lazytune_eval").exists()


def test_eval_data_that_does_not_fit_the_model_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An embedder run given alpaca records: exit 2 naming the file and what the kind reads; nothing started."""
    fake_run(tmp_path, backend="flagembedding", adapter=False, exit_codes=(0,))
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": "Say 1", "input": "", "output": "1"}]))
    assert main(["eval", str(tmp_path / "target"), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "eval data for a flagembedding embed model (query/pos/neg records)" in err and "alpaca.json" in err
    assert not list((tmp_path / "target" / "lazytune_eval").iterdir())  # its folder is removed again


def test_chat_with_an_embedder_run_says_rank_instead(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(tmp_path, backend="flagembedding", adapter=False, exit_codes=(0,))
    assert main(["chat", str(tmp_path / "target"), "--prompt", "hi"]) == 2
    assert "holds a fine-tuned embedder, not an LLM" in capsys.readouterr().err
