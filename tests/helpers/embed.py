"""Tiny embedders / rerankers, training data and result probes for the finetune.flagembedding tests.

    from tests.helpers.embed import fe_python, tiny_berts, write_triples, embeddings, rerank_scores

Models are built once per folder with lazytune/scripts/make_tiny_bert.py using the flagembedding environment's
Python (the one that trains them). Probes load a model in that environment, in a subprocess, with FlagEmbedding's
own inference classes (FlagModel, FlagReranker): what a user would do with the result.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lazytune.backends.base import script

CAPITALS = [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("spain", "madrid"), ("japan", "tokyo"),
            ("china", "beijing"), ("egypt", "cairo"), ("peru", "lima"), ("norway", "oslo"), ("england", "london")]
ANIMALS = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "mouse", "lion", "tiger", "bear", "wolf"]


def fe_installed() -> bool:
    from lazytune import envs

    return bool(os.environ.get(envs.python_variable("flagembedding"))) or envs.read_stamp("flagembedding") is not None


def fe_python() -> str:
    """The flagembedding environment's Python; skips the test (with the install command) when it is not there."""
    from lazytune import envs

    if not fe_installed():
        pytest.skip("the flagembedding environment is not installed: run `lazytune env install flagembedding`")
    return envs.python_for("flagembedding")


def tiny_berts(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Folders of a tiny random BERT embedder (BertModel) and reranker (BertForSequenceClassification, 1 label).

    Built together on first use (one process: importing torch is the slow part), reused after; the folder names
    (tiny-bert-embed-s0, tiny-bert-reranker-s0) agree with their architectures, so the kind is detected.
    """
    python = fe_python()
    embed, rerank = Path(root) / f"tiny-bert-embed-s{seed}", Path(root) / f"tiny-bert-reranker-s{seed}"
    if all((p / "tiny_model.json").is_file() for p in (embed, rerank)):
        return embed, rerank
    embed.parent.mkdir(parents=True, exist_ok=True)
    with open(embed.parent / f".tiny-bert-s{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers may ask for the same models at once
        if not all((p / "tiny_model.json").is_file() for p in (embed, rerank)):
            argv = [python, script("make_tiny_bert.py"), "--embed", str(embed), "--rerank", str(rerank),
                    "--seed", str(seed)]  # fmt: skip
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"make_tiny_bert.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return embed, rerank


def triples(n: int = 16) -> list[dict[str, Any]]:
    """`n` query / pos / neg records about capitals, with animal sentences as negatives."""
    out = []
    for i in range(n):
        country, city = CAPITALS[i % len(CAPITALS)]
        wrong = CAPITALS[(i + 3) % len(CAPITALS)][1]
        out.append({
            "query": f"what is the capital of {country}",
            "pos": [f"{city} is the capital city of {country}"],
            "neg": [f"the {ANIMALS[i % len(ANIMALS)]} can run fast", f"{wrong} is a big city",
                    f"the {ANIMALS[(i + 5) % len(ANIMALS)]} likes milk"],
        })  # fmt: skip
    return out


def write_triples(path: Path, n: int = 16, fmt: str = "jsonl", records: list[dict] | None = None) -> Path:
    """Write training records as JSON lines (fmt='jsonl') or one JSON array (fmt='json')."""
    records = triples(n) if records is None else records
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


_PROBE = """
import json, sys
out = []
for req in json.load(sys.stdin):
    if req["kind"] == "embed":
        from FlagEmbedding import FlagModel
        m = FlagModel(req["model"], use_fp16=False, devices="cpu", pooling_method=req["pooling"])
        out.append(m.encode(req["texts"]).tolist())
    else:
        from FlagEmbedding import FlagReranker
        m = FlagReranker(req["model"], use_fp16=False, devices="cpu")
        scores = m.compute_score(req["pairs"])
        out.append(scores if isinstance(scores, list) else [scores])
print("PROBE" + json.dumps(out))
"""


def _probe(requests: list[dict[str, Any]]) -> list[Any]:
    """Run all `requests` in one process of the flagembedding env (importing FlagEmbedding takes seconds)."""
    proc = subprocess.run([fe_python(), "-c", _PROBE], input=json.dumps(requests), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("PROBE")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"probe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("PROBE"):])


def embeddings(models: list[Path], texts: list[str], pooling: str = "mean") -> list[list[list[float]]]:
    """For each model, the embeddings of `texts` from FlagEmbedding's FlagModel (one process for all)."""
    return _probe([{"kind": "embed", "model": str(m), "texts": texts, "pooling": pooling} for m in models])


def rerank_scores(models: list[Path], pairs: list[tuple[str, str]]) -> list[list[float]]:
    """For each model, the scores of (query, passage) pairs from FlagEmbedding's FlagReranker."""
    return _probe([{"kind": "rerank", "model": str(m), "pairs": [list(p) for p in pairs]} for m in models])


def max_abs_diff(a: list[list[float]] | list[float], b: list[list[float]] | list[float]) -> float:
    flat_a = [x for row in a for x in (row if isinstance(row, list) else [row])]
    flat_b = [x for row in b for x in (row if isinstance(row, list) else [row])]
    assert len(flat_a) == len(flat_b)
    return max(abs(x - y) for x, y in zip(flat_a, flat_b, strict=True))
