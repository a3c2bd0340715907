"""Runs found from their manifests (`<target>/lazytune_runs/<run_id>/lazytune_run.json`): list, logs, cancel.

    from lazytune import runs
    for r in runs.find_runs():          # under LAZYTUNE_TRAIN_TARGET_ROOT (default: the current folder)
        print(r.run_id, r.state, r.progress())
    runs.find_run("20260101-120000-ab12cd").cancel()

Each is a `lazytune.run.Run` loaded back from its manifest (`Run.load`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .config import settings
from .errors import ConfigError
from .run import FINISHED, MANIFEST, CancelError, Run

RUNS_DIR = "lazytune_runs"
SKIP_DIRS = {"lazyllm_lora", "lazyllm_merge", RUNS_DIR, "node_modules", "__pycache__"}

__all__ = ["FINISHED", "MANIFEST", "CancelError", "Run", "find_run", "find_runs"]


def _manifests(root: Path, max_depth: int) -> Iterator[Path]:
    for folder, dirs, _ in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if RUNS_DIR in dirs:
            yield from sorted(Path(folder, RUNS_DIR).glob(f"*/{MANIFEST}"))
        dirs[:] = [] if depth >= max_depth else sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))


def find_runs(root: str | os.PathLike | None = None, max_depth: int = 4) -> list[Run]:
    """Every run under `root` (default LAZYTUNE_TRAIN_TARGET_ROOT), oldest first. Unreadable manifests are skipped."""
    base = Path(root).expanduser() if root is not None else settings().train_target_root
    records = []
    for path in _manifests(base.absolute(), max_depth):
        try:
            records.append(Run.load(path))
        except ConfigError:
            continue
    return sorted(records, key=lambda r: (r.data.get("started") or 0, r.run_id))


def find_run(ref: str | os.PathLike, root: str | os.PathLike | None = None) -> Run:
    """A run from its id (or a unique prefix), its target folder (latest run), run folder or manifest path."""
    path = Path(ref).expanduser()
    if path.is_file():
        return Run.load(path)
    if (path / MANIFEST).is_file():
        record = Run.load(path / MANIFEST)
        own = path / RUNS_DIR / record.run_id / MANIFEST  # the per-run copy is the one cancel updates
        return Run.load(own) if own.is_file() else record
    records = find_runs(root)
    matches = [r for r in records if r.run_id == str(ref)] or [r for r in records if r.run_id.startswith(str(ref))]
    where = Path(root) if root is not None else settings().train_target_root
    if not matches:
        raise ConfigError(f"no run {str(ref)!r} under {where.absolute()} (give a run id, a target folder or a "
                          "manifest path; --root or LAZYTUNE_TRAIN_TARGET_ROOT says where to look)")  # fmt: skip
    if len({r.run_id for r in matches}) > 1:
        raise ConfigError(f"{str(ref)!r} matches several runs: {', '.join(r.run_id for r in matches)}")
    return matches[-1]
