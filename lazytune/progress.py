"""Training progress from a backend's own log (LLaMA-Factory's trainer_log.jsonl format), never from the console."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_trainer_log(path: Path) -> list[dict[str, Any]]:
    """Entries of a trainer_log.jsonl written so far; a half-written last line is skipped."""
    entries = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    entries.append(entry)
    except FileNotFoundError:
        pass
    return entries
