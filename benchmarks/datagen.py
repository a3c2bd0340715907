"""Generated alpaca-format training files of a given size (JSON lines or one JSON array), written fast."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("alpha", "beta", "gamma", "delta", "épsilon", "zeta", "ēta", "theta", "iota", "kappa", "λambda", "mu")


def record(i: int) -> dict[str, str]:
    w = WORDS
    return {
        "instruction": f"Question {i}: what comes after {w[i % 12]} and {w[(i * 7) % 12]}?",
        "input": "" if i % 3 else f"context {i} " + " ".join(w[(i + k) % 12] for k in range(i % 9)),
        "output": f"Answer {i}: " + " ".join(w[(i * k) % 12] for k in range(4 + i % 11)) + ".",
    }


def generate(path: Path, fmt: str, size: int) -> Path:
    """Write `path` (fmt 'jsonl' or 'json') of at least `size` bytes; reuse it when it is already there."""
    if path.is_file() and path.stat().st_size >= size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    written, i = 0, 0
    with open(tmp, "w", encoding="utf-8") as f:
        if fmt == "json":
            f.write("[\n")
            written += 2
        while written < size:
            lines = [json.dumps(record(i + k), ensure_ascii=False) for k in range(1000)]
            i += 1000
            sep = ",\n" if fmt == "json" else "\n"
            chunk = sep.join(lines)
            if fmt == "json":
                chunk = ("" if i == 1000 else ",\n") + chunk
            else:
                chunk += "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
        if fmt == "json":
            f.write("\n]\n")
    tmp.replace(path)
    return path
