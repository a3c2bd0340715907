"""Small training files in every format LLaMA-Factory reads (for tests of finetune.llamafactory and others)."""

from __future__ import annotations

import json
from pathlib import Path

N = 12


def write_records(path: Path, records: list, jsonl: bool = False) -> Path:
    """Write records as a JSON array, or JSON lines when `jsonl`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def alpaca(path: Path, n: int = N, jsonl: bool = False) -> Path:
    """instruction/input/output records."""
    records = [{"instruction": f"Repeat the number {i}", "input": "", "output": f"{i} {i} {i}"} for i in range(n)]
    return write_records(path, records, jsonl)


def sharegpt(path: Path, n: int = N) -> Path:
    """`conversations` with from/value (human/gpt), one with a system column."""
    records = [
        {"conversations": [{"from": "human", "value": f"Count to {i}"},
                           {"from": "gpt", "value": " ".join(str(j) for j in range(i + 1))}]}
        for i in range(n)
    ]  # fmt: skip
    records[0]["system"] = "You count."
    return write_records(path, records)


def openai_messages(path: Path, n: int = N) -> Path:
    """`messages` with role/content (system/user/assistant), as JSON lines."""
    records = [
        {"messages": [{"role": "system", "content": "Answer yes or no."},
                      {"role": "user", "content": f"Is {i} even?"},
                      {"role": "assistant", "content": "yes" if i % 2 == 0 else "no"}]}
        for i in range(n)
    ]  # fmt: skip
    return write_records(path, records, jsonl=True)


def text(path: Path, n: int = N) -> Path:
    """Plain text, one document per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"The number {i} comes after {i - 1} and before {i + 1}.\n" for i in range(n)))
    return path


def pairs(path: Path, n: int = N) -> Path:
    """Alpaca-style preference pairs (chosen/rejected) for rm / dpo / orpo."""
    records = [{"instruction": f"Say {i}", "input": "", "chosen": f"{i}", "rejected": f"no {i + 1}"} for i in range(n)]
    return write_records(path, records)


def sharegpt_pairs(path: Path, n: int = N) -> Path:
    """Sharegpt preference pairs: conversations + chosen/rejected messages."""
    records = [
        {"conversations": [{"from": "human", "value": f"Say {i}"}],
         "chosen": {"from": "gpt", "value": f"{i}"}, "rejected": {"from": "gpt", "value": f"no {i + 1}"}}
        for i in range(n)
    ]  # fmt: skip
    return write_records(path, records)


def kto(path: Path, n: int = N) -> Path:
    """Alpaca records with a kto_tag (desirable or not)."""
    records = [
        {"instruction": f"Say {i}", "input": "", "output": f"{i}" if i % 2 else f"no {i}", "kto_tag": bool(i % 2)}
        for i in range(n)
    ]  # fmt: skip
    return write_records(path, records)
