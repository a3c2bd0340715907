"""Streaming data reading: formats, line numbers in errors, resolution of paths and folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lazytune.data import detect_format, iter_records, resolve_data, sniff
from lazytune.errors import DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def test_json_array_records_with_lines(tmp_path: Path) -> None:
    p = write(tmp_path, "a.json", '[\n  {"a": 1},\n  {"a": 2,\n   "b": "x"}\n]\n')
    assert list(iter_records(p)) == [(2, {"a": 1}), (3, {"a": 2, "b": "x"})]
    s = sniff(p)
    assert s.format == "json" and s.columns == {"a", "b"}


def test_jsonl_and_text(tmp_path: Path) -> None:
    p = write(tmp_path, "a.jsonl", '{"q": 1}\n\n{"q": 2}\n')
    assert [n for n, _ in iter_records(p)] == [1, 3]
    t = write(tmp_path, "doc.txt", "first doc\nsecond doc\n")
    assert sniff(t).format == "text" and sniff(t).sample == ["first doc", "second doc"]


def test_bom_is_accepted(tmp_path: Path) -> None:
    p = write(tmp_path, "bom.json", b'\xef\xbb\xbf[{"a": 1}]')
    assert list(iter_records(p)) == [(1, {"a": 1})]


@pytest.mark.parametrize(
    ("name", "content", "line", "fragment"),
    [
        ("bad.jsonl", '{"a": 1}\n{"a": 2}\n{"a": \n', 3, "invalid JSON"),
        ("bad.json", '[\n{"a": 1},\n{"a": 2\n]', 4, "invalid JSON"),
        ("missing_comma.json", '[\n{"a": 1}\n{"a": 2}\n]', 3, "expected ','"),
        ("trailing.json", '[{"a": 1},\n]', 2, "trailing comma"),
        ("unclosed.json", '[{"a": 1},\n{"a": 2}', 2, "missing ']'"),
        ("scalar.jsonl", '{"a": 1}\n[1, 2]\n', 2, "must be an object"),
        ("items.json", "[1, 2]", 1, "must be objects"),
        ("latin1.jsonl", b'{"a": "ok"}\n{"a": "caf\xe9"}\n', 2, "not UTF-8"),
        ("obj.json", 'x{"a": 1}', 1, "expected a JSON array"),
    ],
)
def test_malformed_reports_file_and_line(tmp_path: Path, name: str, content: str, line: int, fragment: str) -> None:
    p = write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        list(iter_records(p))
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value) and name in str(info.value)


def test_line_numbers_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lazytune.data as data

    monkeypatch.setattr(data, "CHUNK", 64)  # force many refills, records straddling chunks
    records = [{"i": i, "text": "x" * (i % 50)} for i in range(200)]
    body = "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"
    p = write(tmp_path, "many.json", body)
    got = list(iter_records(p))
    assert [r for _, r in got] == records
    assert [n for n, _ in got] == list(range(2, 202))
    bad = write(tmp_path, "bad_many.json", body.replace('{"i": 150,', '{"i": 150,,'))
    with pytest.raises(DataError) as info:
        list(iter_records(bad))
    assert info.value.line == 152


def test_sniff_reads_only_the_head(tmp_path: Path) -> None:
    p = write(tmp_path, "head.jsonl", '{"a": 1}\n' * 30 + "this line is broken\n")
    assert sniff(p, max_records=20).format == "jsonl"  # the broken tail is not read by sniffing
    with pytest.raises(DataError):
        list(iter_records(p))


def test_resolve_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write(tmp_path, "a.json", "[{}]")
    folder = tmp_path / "dir"
    folder.mkdir()
    write(folder, "x.jsonl", "{}\n")
    write(folder, "notes.md", "ignored")
    assert resolve_data(str(a)) == [a.resolve()]
    assert resolve_data([a, folder]) == [a.resolve(), (folder / "x.jsonl").resolve()]
    monkeypatch.setenv("LAZYTUNE_DATA_PATH", str(tmp_path))
    monkeypatch.chdir(folder)
    assert resolve_data("a.json") == [a.resolve()]


@pytest.mark.parametrize("case", ["missing", "empty", "emptydir", "none", "emptylist", "badtype", "whitespace"])
def test_resolve_data_errors(tmp_path: Path, case: str) -> None:
    (tmp_path / "emptydir").mkdir()
    write(tmp_path, "empty.json", "")
    ws = write(tmp_path, "ws.json", "   \n ")
    arg = {
        "missing": tmp_path / "nope.json", "empty": tmp_path / "empty.json", "emptydir": tmp_path / "emptydir",
        "none": None, "emptylist": [], "badtype": [3], "whitespace": ws,
    }[case]  # fmt: skip
    with pytest.raises(DataError):
        files = resolve_data(arg)
        for f in files:
            detect_format(f)
