"""Score passages with a fine-tuned embedder or reranker and its base, inside the flagembedding environment.

Standalone (never imports lazytune); `lazytune chat --query` / `lazytune eval` run it as a launcher step:

    python rank_model.py SPEC.json

The models are loaded with FlagEmbedding's own inference classes (FlagModel / FlagReranker: what a user of the result
does), with the run's pooling, normalization and instructions. SPEC (written by lazytune.evaluate):
  mode    "rank" (spec["query"] against spec["passages"]) or "eval" (every record of spec["data"]: query, pos, neg)
  kind    "embed" or "rerank";  models: [{"name", "path"}];  options: the run's FlagEmbedding options
Writes {"scores": {model: [...]}} or {"records": N, "models": {model: [{"pos": [...], "neg": [...]}, ...]}} to out.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run by path in a backend env: its sibling modules
from script_utils import read_records  # noqa: E402


def device() -> str:
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class Scorer:
    def __init__(self, spec: dict, model: dict):
        o, self.kind = spec.get("options", {}), spec["kind"]
        if self.kind == "embed":
            from FlagEmbedding import FlagModel

            kw = {"pooling_method": o.get("sentence_pooling_method") or "cls",
                  "normalize_embeddings": o.get("normalize_embeddings", True) is not False,
                  "query_instruction_for_retrieval": o.get("query_instruction_for_retrieval"),
                  "query_instruction_format": o.get("query_instruction_format") or "{}{}",
                  "query_max_length": o.get("query_max_len") or 512,
                  "passage_max_length": o.get("passage_max_len") or 512}  # fmt: skip
            self.model = FlagModel(model["path"], use_fp16=False, devices=device(), **kw)
        else:
            from FlagEmbedding import FlagReranker

            self.model = FlagReranker(model["path"], use_fp16=False, devices=device())
            self.max_len = o.get("max_len") or (o.get("query_max_len") or 256) + (o.get("passage_max_len") or 256)

    def scores(self, query: str, passages: list[str]) -> list[float]:
        if self.kind == "embed":
            q = self.model.encode_queries([query])
            p = self.model.encode_corpus(passages)
            return [float(x) for x in (q @ p.T)[0]]
        got = self.model.compute_score([[query, p] for p in passages], max_length=self.max_len)
        return [float(x) for x in (got if isinstance(got, list) else [got])]


def progress_line(path: str | None, done: int, total: int) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"current_steps": done, "total_steps": total}) + "\n")


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out: dict = {"device": device()}
    if spec["mode"] == "rank":
        out["scores"] = {m["name"]: Scorer(spec, m).scores(spec["query"], spec["passages"]) for m in spec["models"]}
    else:
        records = [r for path in spec["data"] for r in read_records(Path(path))]
        if spec.get("max_samples"):
            records = records[: int(spec["max_samples"])]
        records = [r for r in records if r.get("pos") and r.get("neg")]
        total, done = len(records) * len(spec["models"]), 0
        out.update(records=len(records), models={})
        for model in spec["models"]:
            scorer, rows = Scorer(spec, model), []
            for record in records:
                scores = scorer.scores(record["query"], [*record["pos"], *record["neg"]])
                rows.append({"pos": scores[: len(record["pos"])], "neg": scores[len(record["pos"]):]})
                done += 1
                progress_line(spec.get("progress"), done, total)
            out["models"][model["name"]] = rows
            print(f"rank_model: {model['name']}: scored {len(rows)} records", flush=True)
    tmp = Path(spec["out"] + ".partial")
    tmp.write_text(json.dumps(out) + "\n", encoding="utf-8")
    os.replace(tmp, spec["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
