"""finetune.flagembedding's training data checks: a streaming read of every record, errors naming file and line.

FlagEmbedding reads .json / .jsonl files with `datasets`; records need `query`, `pos` [...], `neg` [...] (optional
`pos_scores`, `neg_scores` for knowledge distillation, `prompt` (embedder) or `query_prompt` / `passage_prompt`
(reranker), `type`). What it would crash on hours later, or silently get wrong, is refused here before anything starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...data import detect_format, iter_records
from ...errors import DataError

DATA_SUFFIXES = (".json", ".jsonl")  # FlagEmbedding silently skips any other file: we refuse it instead


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _number_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def check_record(rec: dict[str, Any], group_size: int, distill: bool) -> str | None:
    """What is wrong with one training record (None: nothing)."""
    for key in ("query", "pos", "neg"):
        if key not in rec:
            return f"missing field {key!r} (each record needs query, pos and neg)"
    if not isinstance(rec["query"], str):
        return f"'query' must be a string, got {type(rec['query']).__name__}"
    for key in ("pos", "neg"):
        if not _str_list(rec[key]):
            return f"{key!r} must be a list of strings, got {json.dumps(rec[key])[:80]}"
    if not rec["pos"]:
        return "'pos' is empty (each query needs at least one positive passage)"
    if not rec["neg"] and group_size > 1:
        return (f"'neg' is empty: with train_group_size={group_size} each query needs at least one negative "
                "(FlagEmbedding repeats them up to train_group_size - 1)")  # fmt: skip
    for key in ("prompt", "type", "query_prompt", "passage_prompt"):
        if key in rec and not isinstance(rec[key], str):
            return f"{key!r} must be a string, got {type(rec[key]).__name__}"
    if distill:
        for scores, texts in (("pos_scores", "pos"), ("neg_scores", "neg")):
            if scores not in rec:
                return f"missing field {scores!r} (needed with knowledge_distillation=True)"
            if not _number_list(rec[scores]) or len(rec[scores]) != len(rec[texts]):
                return f"{scores!r} must be a list of numbers, one per {texts!r} passage"
    return None


def prompt_fields(options: dict[str, Any]) -> list[str]:
    """Per-record instruction fields FlagEmbedding reads for this run (only when the matching instruction is set)."""
    if options.get("model_kind", "embed") == "embed":
        wanted = {"prompt": "query_instruction_for_retrieval"}
    else:
        wanted = {"query_prompt": "query_instruction_for_rerank", "passage_prompt": "passage_instruction_for_rerank"}
    return [field for field, instruction in wanted.items() if options.get(instruction) is not None]


def check_data(files: Iterable[Path], options: dict[str, Any], world_size: int) -> int:
    """Check the training files; returns the number of records read. Raises DataError naming file and line.

    With validate_data=False only the first 20 records of each file are read (and the returned count covers those).
    """
    group_size = options["train_group_size"]
    distill = bool(options.get("knowledge_distillation"))
    limit = None if options.get("validate_data", True) else 20
    # datasets fills a field some records lack with None, and FlagEmbedding then formats None as the instruction.
    seen: dict[str, dict[bool, tuple[Path, int]]] = {f: {} for f in prompt_fields(options)}
    total = 0
    for path in files:
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise DataError("FlagEmbedding reads only .json and .jsonl files (it would skip this one)", path)
        fmt = detect_format(path)
        count = 0
        for line, rec in iter_records(path, fmt):
            problem = check_record(rec, group_size, distill)
            if problem:
                raise DataError(problem, path, line)
            for field, where in seen.items():
                where.setdefault(field in rec, (path, line))
                if len(where) == 2:
                    (with_path, with_line), (without_path, without_line) = where[True], where[False]
                    raise DataError(
                        f"{field!r} is set in some records ({with_path}, line {with_line}) but not in this one: "
                        f"FlagEmbedding would use the text 'None' as the instruction here; give every record a "
                        f"{field!r} or none", without_path, without_line)  # fmt: skip
            count += 1
            if limit is not None and count >= limit:
                break
        if count == 0:
            raise DataError("no records", path)
        total += count
    batch = options["per_device_train_batch_size"] * world_size
    if limit is None and options["dataloader_drop_last"] and total < batch:
        raise DataError(
            f"only {total} record(s) but one step takes {batch} (per_device_train_batch_size x {world_size} "
            "process(es)) and dataloader_drop_last=True: no training step would run"
        )
    return total
