"""Bad model and target paths for every backend, and hostile characters in paths (which must simply work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lazytune import ConfigError, ModelNotFoundError, TargetExistsError

from .backends import ALL, PROFILES, expect_error, nothing_started, tree
from .conftest import Workspace, make_workspace

pytestmark = pytest.mark.parametrize("ws", ALL, indirect=True)


def test_model_folder_missing(ws: Workspace) -> None:
    expect_error(ws.profile, ws.root / "no-such-model", ws.target, ws.data, r"base model not found.*never downloads",
                 ModelNotFoundError)  # fmt: skip


def test_model_is_a_file(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model / "config.json", ws.target, ws.data, r"must be a folder, not a file",
                 ModelNotFoundError)  # fmt: skip


def test_model_without_config_json(ws: Workspace) -> None:
    if not ws.profile.cls().needs_model_config:
        pytest.skip(f"{ws.profile.name} does not read the model's config.json")
    (ws.model / "config.json").unlink()
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"has no config\.json", ModelNotFoundError)


@pytest.mark.parametrize("model", ["", None, 3])
def test_model_not_a_path(ws: Workspace, model: object) -> None:
    expect_error(ws.profile, model, ws.target, ws.data, r"base_model must be a folder path", ModelNotFoundError)


def test_target_holds_a_previous_run(ws: Workspace) -> None:
    (ws.target / "lazyllm_lora").mkdir(parents=True)
    (ws.target / "lazyllm_lora" / "adapter_model.safetensors").write_bytes(b"weights")
    (ws.target / "lazytune_run.json").write_text("{}")
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"target is not empty.*overwrite=True", TargetExistsError)


def test_target_holds_other_files(ws: Workspace) -> None:
    ws.target.mkdir()
    (ws.target / "notes.txt").write_text("mine")
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"target is not empty", TargetExistsError)


def test_target_is_a_file(ws: Workspace) -> None:
    ws.target.write_text("a file")
    expect_error(ws.profile, ws.model, ws.target, ws.data, r"exists and is not a folder")


@pytest.mark.parametrize("target", ["", None])
def test_target_not_a_path(ws: Workspace, target: object) -> None:
    with nothing_started(ws.root / "target"), pytest.raises(ConfigError, match=r"target_path must be a folder path"):
        ws.profile.trainer(ws.model, target)(ws.data)


HOSTILE = ["with space", "quote's \"double\"", "semi;colon && echo", "dollar $(touch PWNED) `touch PWNED`",
           "new\nline", "star * ?"]  # fmt: skip


def strings_in(content: str) -> list[str]:
    """All string values of a JSON or YAML document (empty when it is neither)."""
    for load in (json.loads, yaml.safe_load):
        try:
            doc = load(content)
            break
        except Exception:
            continue
    else:
        return []
    out: list[str] = []
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack += list(item.keys()) + list(item.values())
        elif isinstance(item, list):
            stack += item
    return out


@pytest.mark.parametrize("name", HOSTILE, ids=["space", "quotes", "semicolon", "subshell", "newline", "glob"])
def test_hostile_characters_in_every_path(ws: Workspace, name: str) -> None:
    """Model, data and target under a folder with shell metacharacters: the plan carries them verbatim."""
    hostile = ws.root / name
    hostile.mkdir()
    model = ws.profile.model(hostile)
    data = ws.profile.good_data(hostile, f"d {name[:4]}.jsonl")
    target = hostile / "target"
    plan = ws.profile.trainer(model, target).plan(data)
    argv = [a for step in plan.steps for a in step.argv]
    assert any(str(hostile) in a for a in argv), "the hostile folder should appear in the argv"
    for spec in plan.files:  # a rendered config that names a hostile path must give it back whole when parsed
        for s in strings_in(spec.content):
            if name in s:
                assert s.startswith(str(hostile)), f"{spec.path.name}: path mangled: {s!r}"
    assert not target.exists() and not list(ws.root.rglob("PWNED"))


def test_hostile_path_runs_end_to_end(ws: Workspace) -> None:
    """The dummy runs for real under every hostile character at once; nothing is executed by a shell."""
    if ws.profile.name != "dummy":
        pytest.skip("a real run per backend is in its own suite; the dummy proves the launcher path")
    hostile = ws.root / "".join(HOSTILE)
    other = make_workspace("dummy", hostile)
    result = PROFILES["dummy"].trainer(other.model, other.target)(other.data)
    assert Path(result) == other.target / "lazyllm_merge"
    assert (other.target / "lazyllm_lora" / "adapter_config.json").is_file()
    assert json.loads((other.target / "lazytune_run.json").read_text())["state"] == "COMPLETED"
    assert not list(ws.root.rglob("PWNED")) and not Path("PWNED").exists()
    assert tree(ws.root / "target") is None


@pytest.mark.parametrize("where", ["merge_is_model", "merge_holds_model", "merge_is_data_folder", "target_is_model"])
def test_outputs_never_hold_the_inputs(ws: Workspace, where: str) -> None:
    """A merge/lora folder that is (or contains) the base model or the data would be overwritten, and emptied with
    overwrite=True: refused before anything runs, with or without overwrite."""
    weights = ws.model / "model.safetensors"
    weights.write_bytes(b"precious")
    target, kw = ws.root / "out", {}
    if where == "merge_is_model":
        kw["merge_path"] = ws.model
    elif where == "merge_holds_model":
        kw["merge_path"] = ws.root
    elif where == "merge_is_data_folder":
        kw["merge_path"] = ws.data.parent
    else:
        target = ws.model / "lazyllm_lora"
        (ws.model / "lazyllm_lora").mkdir()
        target, kw["merge_path"] = ws.model / "lazyllm_lora", ws.model
    for overwrite in (False, True):
        with nothing_started(ws.model), pytest.raises(ConfigError, match=r"an input of this run"):
            ws.profile.trainer(ws.model, target, overwrite=overwrite, **kw)(ws.data)
    assert weights.read_bytes() == b"precious" and ws.data.is_file()
