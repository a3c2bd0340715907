"""`lazytune chat` / `lazytune eval` for real: tiny fine-tunes on CPU, then the models answered and measured in their
backend environments (LLaMA-Factory, alpacalora, FlagEmbedding embedder and reranker). Each module needs its env.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import launchers
from lazytune import finetune, runs
from lazytune.cli import main
from lazytune.evaluate import EvalError, latest_eval
from tests.helpers import lf_data
from tests.helpers.alpaca import write_alpaca
from tests.helpers.embed import tiny_berts, write_triples
from tests.helpers.models import env_python, tiny_model

pytestmark = pytest.mark.slow

LF = dict(num_train_epochs=6, per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
          learning_rate=3e-3, cutoff_len=64)  # fmt: skip


def cpu() -> launchers.LocalLauncher:
    return launchers.local(ngpus=0, stream=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lf_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Qwen2 LoRA-tuned by LLaMA-Factory on 12 alpaca records: (target, data)."""
    root = tmp_path_factory.mktemp("lf")
    with pytest.MonkeyPatch.context() as mp:
        from tests.conftest import OFFLINE

        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        model = tiny_model(tmp_path_factory.getbasetemp() / "models", "qwen2", env_python("llamafactory"),
                           name="Qwen2.5-tiny")  # fmt: skip
        data = lf_data.alpaca(root / "data" / "alpaca.json")
        finetune.llamafactory(model, root / "target", launcher=cpu(), **LF)(data)
    return root / "target", data


def test_lf_eval_tuned_loss_below_base_and_saved(lf_run: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    target, data = lf_run
    code, out, err = cli(capsys, "eval", str(target), "--data", str(data), "--json", "--launcher", "local",
                         "--ngpus", "0")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["records"] == 12 and report["kind"] == "llm"
    assert report["tuned"]["loss"] < report["base"]["loss"]
    assert report["tuned"]["perplexity"] < report["base"]["perplexity"]
    assert report["change"]["loss"] == pytest.approx(report["tuned"]["loss"] - report["base"]["loss"])
    assert Path(report["saved"]).parent == target / "lazytune_eval"
    assert latest_eval(target)["tuned"] == report["tuned"]
    code, out, _ = cli(capsys, "jobs", "--root", str(target.parent))
    assert code == 0 and "EVAL" in out and f"loss {report['base']['loss']:.4g}->{report['tuned']['loss']:.4g}" in out


def test_lf_eval_generate_and_max_samples_in_python(lf_run: tuple[Path, Path]) -> None:
    target, data = lf_run
    report = runs.find_run(target).evaluate(data, max_samples=3, generate=True, max_new_tokens=6, launcher=cpu())
    assert report["records"] == 3
    for side in ("base", "tuned"):
        assert set(report[side]) >= {"loss", "perplexity", "exact_match", "rouge-l", "bleu-4"}
        assert all(0 <= report[side][k] <= 100 for k in ("exact_match", "rouge-l", "bleu-4"))
    assert [e["reference"] for e in report["examples"]] == ["0 0 0", "1 1 1", "2 2 2"]


def test_lf_chat_prompt_compare_and_session(lf_run: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    target, _ = lf_run
    code, out, err = cli(capsys, "chat", str(target), "--prompt", "Repeat the number 3", "--max-new-tokens", "6",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert set(json.loads(out)) == {"tuned"}
    run = runs.find_run(target)
    answers = run.chat("Repeat the number 3", compare=True, max_new_tokens=6, launcher=cpu())
    assert set(answers) == {"base", "tuned"} and all(isinstance(a, str) for a in answers.values())
    assert answers["tuned"] == json.loads(out)["tuned"]  # greedy: the same answer every time
    with run.chat(max_new_tokens=4, launcher=cpu()) as session:
        first = session.ask("Repeat the number 3")
        assert set(first) == {"tuned"}
        session.ask("again")
        assert [m["role"] for m in session.history["tuned"]] == ["user", "assistant", "user", "assistant"]
        session.reset()
        assert session.history["tuned"] == []
    assert session.job.state.value == "COMPLETED"  # {"stop": true} ended the model process


def test_lf_interactive_cli(lf_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Repeat the number 1\n\n/reset\nRepeat the number 2\n"))
    code, out, err = cli(capsys, "chat", str(lf_run[0]), "--compare", "--max-new-tokens", "4")
    assert code == 0, err
    assert out.count("base      :") == 2 and out.count("fine-tuned:") == 2
    assert "conversation forgotten" in err


def test_lf_merge_failed_falls_back_to_adapter(lf_run: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A run whose export step failed: chat and eval use base + adapter, and say so."""
    target, data = lf_run
    copy = tmp_path / "copy"
    shutil.copytree(target, copy, ignore=shutil.ignore_patterns("lazyllm_merge", "lazytune_eval", "lazytune_chat"))
    manifest = json.loads((copy / "lazytune_run.json").read_text())
    text = json.dumps(manifest).replace(str(target), str(copy))
    manifest = json.loads(text)
    manifest["state"] = "FAILED"
    manifest["job"]["steps"][-1]["exit_code"] = 1
    for path in (copy / "lazytune_run.json", copy / "lazytune_runs" / manifest["run_id"] / "lazytune_run.json"):
        path.write_text(json.dumps(manifest))
    code, out, err = cli(capsys, "eval", str(copy), "--data", str(data), "--json", "--max-samples", "4")
    assert code == 0, err
    assert "merge step failed" in err and "LoRA adapter" in err
    report = json.loads(out)
    assert report["adapter"] == str(copy / "lazyllm_lora") and report["tuned"]["loss"] < report["base"]["loss"]
    with_merge = runs.find_run(target).evaluate(data, max_samples=4, launcher=cpu())
    assert report["tuned"]["loss"] == pytest.approx(with_merge["tuned"]["loss"], rel=1e-3)  # same model


def test_lf_bad_inputs(lf_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target, _ = lf_run
    code, _, err = cli(capsys, "chat", str(target), "--prompt", "  ")
    assert code == 2 and "prompt is empty" in err
    triples = write_triples(tmp_path / "triples.jsonl", 4)
    code, _, err = cli(capsys, "eval", str(target), "--data", str(triples))
    assert code == 2 and "eval data for a llamafactory sft model" in err and "Traceback" not in err
    code, _, err = cli(capsys, "eval", str(target), "--data", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in err
    code, _, err = cli(capsys, "chat", str(target), "--query", "q", "--passages", str(triples))
    assert code == 2 and "trained an LLM" in err
    code, _, err = cli(capsys, "chat", str(target), "--prompt", "x", "--base", "--compare")
    assert code == 2 and "exclude each other" in err


def test_lf_model_that_does_not_fit_memory(lf_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import psutil

    class Tiny:
        available = 1024

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())  # a stand-in: this machine has enough memory
    code, _, err = cli(capsys, "chat", str(lf_run[0]), "--prompt", "hi", "--launcher", "local", "--ngpus", "0")
    assert code == 2 and "GiB free" in err


def test_lf_eval_and_chat_session_as_slurm_jobs(lf_run: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """--launcher slurm: the eval runs as a batch job (the fake sbatch runs the generated script), and a chat session
    talks to a model process inside a job through the shared folder."""
    import os

    from tests.slurm import fake_slurm

    bin_dir = fake_slurm.install(tmp_path / "fakebin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "fake-state"))
    target, data = lf_run
    code, out, err = cli(capsys, "eval", str(target), "--data", str(data), "--max-samples", "3", "--json",
                         "--launcher", "slurm", "--partition", "debug")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["records"] == 3
    assert list((tmp_path / "fake-state").glob("*.json"))  # it went through sbatch
    with runs.find_run(target).chat(max_new_tokens=3, launcher=launchers.slurm(partition="debug")) as session:
        assert set(session.ask("Repeat the number 5")) == {"tuned"}


def test_ctrl_c_stops_the_model_process(lf_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Ctrl-C during `lazytune eval`: exit 130 at once, and the model process it started is gone too."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    target = lf_run[0]
    data = lf_data.alpaca(tmp_path / "many.json", n=300)  # answers for 300 records: minutes, so it is still running
    # a test run started in the background (`make test &`) ignores SIGINT, and children inherit that: restore it
    proc = subprocess.Popen([sys.executable, "-m", "lazytune.cli", "eval", str(target), "--data", str(data),
                             "--generate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline, children = time.monotonic() + 60, []
        while time.monotonic() < deadline and not children:
            children = [c for c in psutil.Process(proc.pid).children(recursive=True) if "llm_model.py" in " ".join(
                c.cmdline())]  # fmt: skip
            time.sleep(0.2)
        assert children, "the eval step never started"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        assert "interrupted" in proc.stderr.read()
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()


# -- alpacalora ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alpaca_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from lazytune import envs

    if envs.read_stamp("alpacalora") is None:
        pytest.skip("the alpacalora environment is not installed: run `lazytune env install alpacalora`")
    root = tmp_path_factory.mktemp("alpaca")
    with pytest.MonkeyPatch.context() as mp:
        from tests.conftest import OFFLINE

        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        model = tiny_model(tmp_path_factory.getbasetemp() / "models-alpaca", "llama", env_python("alpacalora"))
        data = write_alpaca(root / "data" / "alpaca.json")
        finetune.alpacalora(model, root / "target", launcher=cpu(), batch_size=4, micro_batch_size=2, val_set_size=0,
                            num_epochs=6, learning_rate=5e-3, warmup_steps=0, logging_steps=1)(data)  # fmt: skip
    return root / "target", data


def test_alpacalora_eval_and_chat(alpaca_run: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    target, data = alpaca_run
    code, out, err = cli(capsys, "eval", str(target), "--data", str(data), "--json", "--generate",
                         "--max-new-tokens", "6")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["backend"] == "alpacalora" and report["records"] == 12
    assert report["tuned"]["loss"] < report["base"]["loss"]
    assert "rouge-l" in report["tuned"]
    code, out, err = cli(capsys, "chat", str(target), "--prompt", "Say 3", "--compare", "--max-new-tokens", "6")
    assert code == 0, err
    assert out.startswith("base      : ") and "\nfine-tuned: " in out


# -- flagembedding ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fe_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fe")
    with pytest.MonkeyPatch.context() as mp:
        from tests.conftest import OFFLINE

        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        embed, rerank = tiny_berts(tmp_path_factory.getbasetemp() / "models")
        data = write_triples(root / "train.jsonl", 16)
        quick = dict(train_group_size=4, query_max_len=32, passage_max_len=32, learning_rate=1e-3, num_train_epochs=3)
        finetune.flagembedding(embed, root / "embed", launcher=cpu(), sentence_pooling_method="mean", **quick)(data)
        finetune.flagembedding(rerank, root / "rerank", launcher=cpu(), **quick)(data)
    return {"embed": root / "embed", "rerank": root / "rerank", "data": data}


@pytest.mark.parametrize("kind", ["embed", "rerank"])
def test_flagembedding_eval_and_rank(fe_runs: dict[str, Path], kind: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    target, data = fe_runs[kind], fe_runs["data"]
    code, out, err = cli(capsys, "eval", str(target), "--data", str(data), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == kind and report["records"] == 16
    for side in ("base", "tuned"):
        assert set(report[side]) == {"recall@1", "recall@5", "recall@10", "mrr"}
        assert 0 < report[side]["mrr"] <= 1 and report[side]["recall@5"] == 1.0  # 4 candidates: always in the top 5
    assert report["tuned"]["mrr"] >= report["base"]["mrr"]
    passages = tmp_path / "passages.txt"
    passages.write_text("the cat can run fast\nparis is the capital city of france\nrome is a big city\n")
    code, out, err = cli(capsys, "chat", str(target), "--query", "what is the capital of france",
                         "--passages", str(passages), "--json")  # fmt: skip
    assert code == 0, err
    ranking = json.loads(out)
    assert len(ranking) == 3 and all(isinstance(r["base"], float) for r in ranking)
    assert [r["tuned"] for r in ranking] == sorted((r["tuned"] for r in ranking), reverse=True)
    code, _, err = cli(capsys, "chat", str(target), "--prompt", "hello")
    assert code == 2 and "--query" in err


def test_no_finished_run_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = cli(capsys, "eval", str(tmp_path / "nothing"), "--data", "x.json")
    assert code == 2 and "no run" in err
    assert EvalError.__mro__[1].__name__ == "LazytuneError"  # job-side failures are exit 1
