"""finetune.flagembedding for real on CPU: tiny BERT embedder and reranker, one and two processes.

Each result is loaded back with FlagEmbedding's own FlagModel / FlagReranker (in the flagembedding environment) and
compared with the base model. Needs `lazytune env install flagembedding` (skipped otherwise).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import launchers
from launchers import JobFailed
from lazytune.backends.flagembedding import FlagembeddingFinetune
from lazytune.backends.flagembedding.args import MODULES, OPTION_SPECS, option_args
from lazytune.run import package_versions
from tests.helpers.embed import embeddings, fe_python, max_abs_diff, rerank_scores, tiny_berts, triples, write_triples

pytestmark = pytest.mark.slow
# Small and quick: 16 records, short sequences, a learning rate a random tiny model visibly moves with.
QUICK = dict(train_group_size=4, query_max_len=32, passage_max_len=32, learning_rate=1e-3, num_train_epochs=2)
QUERY = "what is the capital of france"
POS, NEG = "paris is the capital city of france", "the cat can run fast"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 busy cores: several BLAS threads per process make a tiny model's step 40x slower (measured 13 s vs 0.3 s).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_berts(tmp_path_factory.getbasetemp() / "models")[0]


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_berts(tmp_path_factory.getbasetemp() / "models")[1]


def manifest(target: Path) -> dict:
    return json.loads((target / "lazytune_run.json").read_text())


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # FlagModel normalizes embeddings


def test_embedder_fine_tune(tiny_embedder: Path, tmp_path: Path) -> None:
    data = write_triples(tmp_path / "train.jsonl", 16)
    target = tmp_path / "target"
    trainer = FlagembeddingFinetune(tiny_embedder, target, launcher=launchers.local(ngpus=0),
                                    sentence_pooling_method="mean", **QUICK)  # fmt: skip
    result = Path(trainer(data))
    assert result == target / "lazyllm_merge"
    m = manifest(target)
    assert m["state"] == "COMPLETED" and m["result"] == str(result)
    assert m["metrics"]["logged_steps"] == 16  # 16 records / batch 2 x 2 epochs, one process
    assert m["versions"]["flagembedding"] == "1.4.2"
    # the progress log written by scripts/flagembedding_train.py's callback: one line per logged step
    log = [json.loads(line) for line in (Path(m["plan"]["run_dir"]) / "trainer_log.jsonl").read_text().splitlines()]
    assert [e["current_steps"] for e in log if "loss" in e] == list(range(1, 17))
    assert log[-1]["total_steps"] == 16 and m["metrics"]["total_steps"] == 16 and "warnings" not in m["metrics"]
    base, tuned = embeddings([tiny_embedder, result], [QUERY, POS, NEG], pooling="mean")
    assert max_abs_diff(base, tuned) > 1e-3
    # trained to pull the positive closer than the negative: the margin grows
    assert cos(tuned[0], tuned[1]) - cos(tuned[0], tuned[2]) > cos(base[0], base[1]) - cos(base[0], base[2])


def test_reranker_fine_tune_from_a_folder_of_json_arrays(tiny_reranker: Path, tmp_path: Path) -> None:
    records = triples(16)
    write_triples(tmp_path / "data" / "a.json", records=records[:8], fmt="json")
    write_triples(tmp_path / "data" / "b.json", records=records[8:], fmt="json")
    target = tmp_path / "target"
    trainer = FlagembeddingFinetune(tiny_reranker, target, launcher=launchers.local(ngpus=0), save_strategy="no",
                                    **QUICK)  # fmt: skip
    plan = trainer.plan(tmp_path / "data")
    argv = plan.steps[0].argv
    assert argv[argv.index("-m") + 1] == MODULES["rerank"] and len(plan.data) == 2
    result = Path(trainer(tmp_path / "data"))
    assert not any(p.name.startswith("checkpoint-") for p in result.iterdir())  # save_strategy="no" honoured
    assert manifest(target)["metrics"]["logged_steps"] == 16
    pairs = [(QUERY, POS), (QUERY, NEG)]
    base, tuned = rerank_scores([tiny_reranker, result], pairs)
    assert max_abs_diff(base, tuned) > 1e-4
    assert tuned[0] - tuned[1] > base[0] - base[1]


def test_two_process_torchrun_on_cpu(tiny_embedder: Path, tmp_path: Path) -> None:
    data = write_triples(tmp_path / "train.jsonl", 16)
    target = tmp_path / "target"
    trainer = FlagembeddingFinetune(tiny_embedder, target, launcher=launchers.local(ngpus=0, nproc=2),
                                    sentence_pooling_method="mean", save_strategy="no", **QUICK)  # fmt: skip
    result = Path(trainer(data))
    m = manifest(target)
    log = Path(m["job"]["steps"][0]["log"]).read_text()
    assert "torch.distributed.run" in log and "--nproc_per_node=2" in log
    assert "--use_cpu True" in log and "--negatives_cross_device True" in log
    # The data is split between the 2 processes: half the optimizer steps of the single-process run.
    assert m["metrics"]["logged_steps"] == 8
    assert m["state"] == "COMPLETED" and (result / "model.safetensors").is_file()


def test_failure_reports_the_log_tail(tmp_path: Path) -> None:
    model = tmp_path / "broken-embedder"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    data = write_triples(tmp_path / "train.jsonl", 4)
    fe_python()
    trainer = FlagembeddingFinetune(model, tmp_path / "target", launcher=launchers.local(ngpus=0), **QUICK)
    with pytest.raises(JobFailed) as err:
        trainer(data)
    assert err.value.step == "train" and err.value.exit_code != 0
    assert "Traceback" in err.value.log_tail or "Error" in err.value.log_tail
    assert manifest(tmp_path / "target")["state"] == "FAILED"


def test_every_option_is_an_argument_of_the_installed_flagembedding(tmp_path: Path) -> None:
    """Guard against upstream renames: every option we render parses with FlagEmbedding's own parsers."""
    python = fe_python()
    data = write_triples(tmp_path / "train.jsonl", 4)
    version = package_versions(python, ("transformers",))["transformers"]
    code = (
        "import json, sys, importlib\n"
        "from transformers import HfArgumentParser\n"
        "for kind, args in json.loads(sys.argv[1]).items():\n"  # the classes both __main__ modules parse with
        "    m = importlib.import_module(f'FlagEmbedding.abc.finetune.{kind}')\n"
        "    p = kind.capitalize()\n"
        "    classes = [getattr(m, f'Abs{p}{k}Arguments') for k in ('Model', 'Data', 'Training')]\n"
        "    HfArgumentParser(classes).parse_args_into_dataclasses(args)\n"
        "    print('PARSED', kind)\n"
    )
    calls = {}
    for kind in ("embed", "rerank"):
        values = {o.name: o.default for o in OPTION_SPECS[kind]}
        values.update(max_steps=3, save_strategy="steps", save_total_limit=2, seed=1, bf16=False, fp16=False,
                      knowledge_distillation=False, passage_instruction_format="{}{}")  # fmt: skip
        values["passage_instruction_for_retrieval" if kind == "embed" else "passage_instruction_for_rerank"] = "p: "
        values["query_instruction_for_rerank"] = "q: "  # ignored for embed (not in its whitelist)
        calls["embedder" if kind == "embed" else "reranker"] = [
            "--model_name_or_path", "x", "--train_data", str(data), "--output_dir", str(tmp_path / "o"),
            "--use_cpu", "True", *option_args(values, kind, version),
        ]  # fmt: skip
    proc = subprocess.run([python, "-c", code, json.dumps(calls)], capture_output=True, text=True, timeout=300)
    assert proc.stdout.count("PARSED") == 2, proc.stderr[-3000:]
