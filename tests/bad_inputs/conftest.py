"""Fixtures of the bad-input suite: a backend profile and a workspace with a valid model, target and data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .backends import PROFILES, Profile


@dataclass
class Workspace:
    profile: Profile
    root: Path
    model: Path
    target: Path
    data: Path


def make_workspace(name: str, root: Path) -> Workspace:
    profile = PROFILES[name]
    profile.cls()  # skips while the backend is a placeholder
    return Workspace(profile, root, profile.model(root), root / "target", profile.good_data(root / "data"))


@pytest.fixture
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """Parametrize with `@pytest.mark.parametrize("ws", [...backend names...], indirect=True)`."""
    return make_workspace(request.param, tmp_path)
