"""Snapshot files for rendered configs and scripts: compare, or rewrite with LAZYTUNE_UPDATE_SNAPSHOTS=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def check_snapshot(folder: Path, name: str, text: str) -> None:
    """Assert `text` equals the stored `folder/name`; store it when updating (or when new, outside CI)."""
    path = folder / name
    update = os.environ.get("LAZYTUNE_UPDATE_SNAPSHOTS") == "1"
    if update or not path.exists():
        if not update and os.environ.get("CI"):
            pytest.fail(f"snapshot {path} is missing; run with LAZYTUNE_UPDATE_SNAPSHOTS=1 and commit it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from {path}; LAZYTUNE_UPDATE_SNAPSHOTS=1 rewrites it"
