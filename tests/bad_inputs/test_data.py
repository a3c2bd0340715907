"""Bad training data: every case names the file (and the line where there is one) before any process starts.

Content cases run twice: against the core reader (`lazytune.data`, always) and through every backend that checks
data content before starting (LLaMA-Factory, alpaca-lora, FlagEmbedding). Path cases run for every backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lazytune import DataError
from lazytune import data as lt_data

from .backends import ALL, DATA_READERS, PROFILES, Profile, expect_error, nothing_started, tree
from .conftest import Workspace

GOOD = {"instruction": "Say 1", "input": "", "output": "1 1"}
SMALL_LIMIT = 1 << 20  # MAX_RECORD_BYTES (64 MB) is lowered to this so the "huge line" cases stay fast


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # file name (the suffix matters)
    content: Callable[[Profile], bytes]
    match: str


def lines(*items: str) -> Callable[[Profile], bytes]:
    return lambda p: "".join(i + "\n" for i in items).encode()


def good(p: Profile, i: int = 0) -> str:
    return json.dumps(p.good_record(i))


CONTENT_CASES = [
    Case("jsonl_bad_line_3", "train.jsonl", lambda p: f"{good(p)}\n{good(p, 1)}\n{{\"output\": \n".encode(),
         r"train\.jsonl, line 3: invalid JSON"),
    Case("json_array_missing_comma_line_4", "train.json",
         lambda p: f"[\n {good(p)},\n {good(p, 1)},\n {good(p, 2)} {good(p, 3)}\n]\n".encode(),
         r"train\.json, line 4: expected ',' or ']'"),
    Case("json_array_bad_value_line_3", "train.json",
         lambda p: f"[\n {good(p)},\n {{\"output\": tru}}\n]".encode(), r"train\.json, line 3: invalid JSON"),
    Case("json_array_trailing_comma", "train.json", lambda p: f"[{good(p)},\n]".encode(), r"line 2: trailing comma"),
    Case("json_array_unclosed", "train.json", lambda p: f"[\n{good(p)},\n{good(p, 1)}\n".encode(), r"missing '\]'"),
    Case("json_extra_after_array", "train.json", lambda p: f"[{good(p)}]\n[{good(p)}]".encode(),
         r"line 2: extra data after the closing"),
    Case("whitespace_only", "train.jsonl", lambda p: b"  \n\n\t\n", r"train\.jsonl: file has only whitespace"),
    Case("empty_array", "train.json", lambda p: b"[ ]", r"train\.json: no records"),
    Case("top_level_string", "train.json", lambda p: b'"just a string"', r"train\.json, line 1: expected a JSON array"),
    Case("top_level_number", "train.jsonl", lambda p: b"42\n", r"train\.jsonl, line 1: expected a JSON array"),
    Case("top_level_object_pretty", "train.json", lambda p: b'{\n  "data": [1, 2]\n}\n',
         r"train\.json, line 1: invalid JSON.*one JSON object per line"),
    Case("array_of_numbers", "train.json", lambda p: b"[1, 2, 3]", r"line 1: array items must be objects, got int"),
    Case("jsonl_line_is_a_list", "train.jsonl", lambda p: f"{good(p)}\n[1, 2]\n".encode(),
         r"line 2: each JSON line must be an object, got list"),
    Case("non_utf8_jsonl_line_2", "train.jsonl", lambda p: f"{good(p)}\n".encode() + b'{"output": "\xff\xfe"}\n',
         r"train\.jsonl, line 2: not UTF-8"),
    Case("non_utf8_json_array", "train.json", lambda p: f"[\n{good(p)},\n".encode() + b'{"output": "caf\xe9"}]',
         r"train\.json, line \d+: not UTF-8"),
    Case("latin1_text_file", "train.txt", lambda p: "line one\ncaf\u00e9 au lait\n".encode("latin-1"),
         r"train\.txt\b.*(not UTF-8|reads only|not plain text)"),
    Case("huge_single_line_jsonl", "train.jsonl",
         lambda p: b'{"output": "' + b"x" * (SMALL_LIMIT * 2) + b'"}\n',
         r"train\.jsonl, line 1: .*larger than"),
    Case("huge_single_record_json", "train.json",
         lambda p: b'[{"output": "' + b"x" * (SMALL_LIMIT * 2) + b'"}]',
         r"train\.json, line 1: .*larger than"),
]  # fmt: skip


def write_case(case: Case, profile: Profile, root: Path) -> Path:
    path = root / "data" / case.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(case.content(profile))
    return path


@pytest.fixture
def small_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lt_data, "MAX_RECORD_BYTES", SMALL_LIMIT)


# -- the core reader ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CONTENT_CASES, ids=[c.id for c in CONTENT_CASES])
def test_core_reader(case: Case, tmp_path: Path, small_records: None) -> None:
    path = write_case(case, PROFILES["dummy"], tmp_path)
    with pytest.raises(DataError, match=case.match):
        files = lt_data.resolve_data(path)
        lt_data.sniff(files[0])
        for _ in lt_data.iter_records(files[0]):
            pass


# -- through each backend that checks data content -------------------------------------------------------------
@pytest.mark.parametrize("ws", DATA_READERS, indirect=True)
@pytest.mark.parametrize("case", CONTENT_CASES, ids=[c.id for c in CONTENT_CASES])
def test_backend_rejects(ws: Workspace, case: Case, small_records: None) -> None:
    path = write_case(case, ws.profile, ws.root)
    expect_error(ws.profile, ws.model, ws.target, path, case.match, DataError)


def jsonl(tmp: Path, name: str, records: list[dict]) -> Path:
    path = tmp / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("ws", DATA_READERS, indirect=True)
def test_missing_column_for_the_stage(ws: Workspace) -> None:
    bad = jsonl(ws.root, "nocol.jsonl", [ws.profile.missing_column_record()] * 3)
    expect_error(ws.profile, ws.model, ws.target, bad, r"nocol\.jsonl.*(column|key|field|has no|missing)", DataError)


@pytest.mark.parametrize("ws", DATA_READERS, indirect=True)
def test_records_of_another_task(ws: Workspace) -> None:
    bad = jsonl(ws.root, "other.jsonl", [ws.profile.other_record()] * 3)
    expect_error(ws.profile, ws.model, ws.target, bad, r"other\.jsonl", DataError)


@pytest.mark.parametrize("ws", DATA_READERS, indirect=True)
def test_mixed_formats_across_files(ws: Workspace) -> None:
    """A good file and one of another task's format: the error names the second file, not the first."""
    bad = jsonl(ws.root, "second.jsonl", [ws.profile.other_record()] * 3)
    err = expect_error(ws.profile, ws.model, ws.target, [ws.data, bad], r"second\.jsonl", DataError)
    assert str(ws.data) not in str(err).split(":")[0]


# -- paths, for every backend ------------------------------------------------------------------------------------
paths = pytest.mark.parametrize("ws", ALL, indirect=True)


@paths
def test_data_file_missing(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model, ws.target, ws.root / "nope.jsonl", r"nope\.jsonl: no such file", DataError)


@paths
def test_data_file_empty(ws: Workspace) -> None:
    empty = ws.root / "empty.jsonl"
    empty.touch()
    expect_error(ws.profile, ws.model, ws.target, empty, r"empty\.jsonl: file is empty", DataError)


@paths
def test_data_folder_without_data_files(ws: Workspace) -> None:
    folder = ws.root / "folder"
    folder.mkdir()
    (folder / "readme.md").write_text("no data here")
    expect_error(ws.profile, ws.model, ws.target, folder, r"folder: folder has no data files", DataError)


@paths
def test_data_is_a_device(ws: Workspace) -> None:
    expect_error(ws.profile, ws.model, ws.target, "/dev/null", r"/dev/null: not a regular file", DataError)


@paths
@pytest.mark.parametrize("data", [42, [], [42], {"train": "x.json"}], ids=["int", "empty_list", "list_of_int", "dict"])
def test_data_of_the_wrong_type(ws: Workspace, data: object) -> None:
    expect_error(ws.profile, ws.model, ws.target, data, r"(no training data|data must be a path)", DataError)


@paths
def test_no_data(ws: Workspace) -> None:
    if not ws.profile.cls().needs_data:
        pytest.skip(f"{ws.profile.name} trains without data")
    expect_error(ws.profile, ws.model, ws.target, None, r"no training data given", DataError)


UNREADABLE_CHECK = """
import sys
from lazytune import DataError, finetune
trainer = getattr(finetune, sys.argv[1])(sys.argv[2], sys.argv[3])
try:
    trainer(sys.argv[4])
except DataError as exc:
    print(exc)
    sys.exit(0)
sys.exit(f"no DataError for an unreadable file")
"""


@paths
def test_data_file_unreadable(ws: Workspace) -> None:
    """chmod 000: as root (who reads anything) the check runs in a child process as user `nobody`."""
    if os.geteuid() != 0:
        bad = ws.profile.good_data(ws.root, "secret.jsonl")
        bad.chmod(0)
        expect_error(ws.profile, ws.model, ws.target, bad, r"secret\.jsonl: file is not readable", DataError)
        return
    with tempfile.TemporaryDirectory(prefix="lazytune-unreadable-") as tmp:
        root = Path(tmp)
        root.chmod(0o777)
        model = ws.profile.model(root)
        for p in [root, *root.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o644)
        bad = ws.profile.good_data(root, "secret.jsonl")
        bad.chmod(0)
        target = root / "target"
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                UNREADABLE_CHECK, ws.profile.name, str(model), str(target), str(bad)]  # fmt: skip
        env = {**os.environ, "HOME": tmp, "LAZYTUNE_HOME": str(root / "home")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "secret.jsonl: file is not readable" in proc.stdout
        assert tree(target) is None


@paths
def test_nothing_started_guard_sees_a_real_run(ws: Workspace) -> None:
    """The guard itself works: a valid dummy run trips it (so a silent pass above means nothing started)."""
    if ws.profile.name != "dummy":
        pytest.skip("checked once, with the dummy")
    with pytest.raises(AssertionError, match="a process was started"), nothing_started(ws.target):
        ws.profile.trainer(ws.model, ws.target)(ws.data)
