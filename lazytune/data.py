"""Training data files: resolve paths, detect the format from the head, stream records with line numbers.

Nothing here loads a whole file: `sniff` reads the first records only; `iter_records` streams (JSON arrays are
parsed incrementally), so validating a 2 GB file uses constant memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import settings
from .errors import DataError

DATA_SUFFIXES = (".json", ".jsonl", ".txt", ".text")
CHUNK = 1 << 20
MAX_RECORD_BYTES = 64 << 20
_WS = " \t\r\n"
_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class Sniffed:
    """What the head of a data file looks like."""

    path: Path
    format: str  # "json" (one array), "jsonl", or "text" (one document per line)
    sample: list[Any] = field(default_factory=list)  # the first records (dicts for json/jsonl, str for text)

    @property
    def columns(self) -> set[str]:
        cols: set[str] = set()
        for rec in self.sample:
            if isinstance(rec, dict):
                cols.update(rec)
        return cols


def is_url(path: object) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def resolve_data(data: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """Local data files for `data` (a path, a folder, or a list of them). URLs are fetched into the cache.

    Relative paths that don't exist are searched in LAZYTUNE_DATA_PATH. Errors name the offending path.
    """
    if data is None:
        raise DataError("no training data given")
    if not isinstance(data, (str, os.PathLike, list, tuple)):
        raise DataError(f"data must be a path or a list of paths, got {type(data).__name__}")
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not items:
        raise DataError("no training data given (empty list)")
    files: list[Path] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise DataError(f"data must be a path or a list of paths, got {type(item).__name__}")
        if isinstance(item, str) and not item.strip():
            # Path('') is the current folder: training on whatever .json/.txt lies there would be a silent mistake
            where = f" (item {items.index(item) + 1} of the list)" if len(items) > 1 else ""
            raise DataError(f"empty data path {item!r}{where}: give a data file or folder "
                            "(an empty path is never read as the current folder)")
        if is_url(item):
            from .fetch import fetch  # fsspec is optional: only URL users need it

            files.append(fetch(str(item)))
            continue
        path = Path(str(item).removeprefix("file://")).expanduser()
        if not path.exists() and not path.is_absolute():
            for root in settings().data_path:
                if (root / path).exists():
                    path = root / path
                    break
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise DataError(f"folder has no data files ({', '.join(DATA_SUFFIXES)})", path)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise DataError("not a regular file", path)
        else:
            raise DataError("no such file", path)
    for f in files:
        if not os.access(f, os.R_OK):
            raise DataError("file is not readable (permissions)", f)
        if f.stat().st_size == 0:
            raise DataError("file is empty", f)
    return [f.resolve() for f in files]


def _first_char(path: Path) -> str:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(4096)
            if not chunk:
                return ""
            text = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")
            if text:
                return chr(text[0])


def detect_format(path: Path) -> str:
    """'json', 'jsonl' or 'text', from the extension and the first non-blank byte."""
    suffix = path.suffix.lower()
    first = _first_char(path)
    if not first:
        raise DataError("file has only whitespace", path)
    if suffix in (".txt", ".text"):
        return "text"
    if first == "[":
        return "json"
    if first == "{":
        return "jsonl"
    if suffix in (".json", ".jsonl"):
        raise DataError(f"expected a JSON array or JSON lines, but the file starts with {first!r}", path, 1)
    return "text"


def sniff(path: Path, max_records: int = 20) -> Sniffed:
    """Format and first `max_records` records of a file, from a streaming read of its head."""
    fmt = detect_format(path)
    sample = []
    for _, rec in iter_records(path, fmt):
        sample.append(rec)
        if len(sample) >= max_records:
            break
    if not sample:
        raise DataError("no records (an empty array or only blank lines)", path)
    return Sniffed(path, fmt, sample)


def iter_records(path: Path, fmt: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, record) for every record. Malformed input raises DataError with the line."""
    fmt = fmt or detect_format(path)
    if fmt == "json":
        yield from _iter_json_array(path)
    else:
        yield from _iter_lines(path, fmt)


def _iter_lines(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    seen_record = False
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_RECORD_BYTES + 1):  # bounded: a huge line never lands in memory whole
            number += 1
            if len(raw) > MAX_RECORD_BYTES:
                raise DataError(f"a line larger than {MAX_RECORD_BYTES / (1 << 20):g} MB", path, number)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not UTF-8 text (byte {exc.start} of the line)", path, number) from None
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            if fmt == "text":
                yield number, line.rstrip("\r\n")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                hint = "" if seen_record else "; expected one JSON object per line, or a JSON array of objects"
                raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno}){hint}", path, number) from None
            if not isinstance(record, dict):
                raise DataError(f"each JSON line must be an object, got {type(record).__name__}", path, number)
            seen_record = True
            yield number, record


class _ArrayReader:
    """Incremental reader of a top-level JSON array; counts lines as it goes (never rescans the buffer)."""

    def __init__(self, path: Path, f: Any):
        self.path, self.f = path, f
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._counted_pos = 0  # newlines in buf[:_counted_pos] are already in _counted_line
        self._counted_line = 1

    def fill(self, size: int = CHUNK) -> bool:
        if self.eof:
            return False
        raw = self.f.read(size)
        if not raw:
            self.eof = True
            return False
        self.line_at(self.pos)
        self.buf = self.buf[self.pos :] + raw
        self._counted_pos -= self.pos
        self.pos = 0
        return True

    def line_at(self, pos: int) -> int:
        if pos >= self._counted_pos:
            self._counted_line += self.buf.count("\n", self._counted_pos, pos)
            self._counted_pos = pos
            return self._counted_line
        return self._counted_line - self.buf.count("\n", pos, self._counted_pos)

    def skip_ws(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def error(self, message: str, pos: int | None = None) -> DataError:
        return DataError(message, self.path, self.line_at(self.pos if pos is None else pos))


def _iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    import codecs

    with open(path, "rb") as raw:
        f = codecs.getreader("utf-8-sig")(raw, errors="strict")
        r = _ArrayReader(path, f)
        try:
            if r.skip_ws() != "[":
                raise r.error("expected a JSON array ('[')")
            r.pos += 1
            first = True
            while True:
                c = r.skip_ws()
                if c == "]":
                    r.pos += 1
                    break
                if c == "":
                    raise r.error("unexpected end of file inside the array (missing ']')")
                if not first:
                    if c != ",":
                        raise r.error(f"expected ',' or ']' between records, found {c!r}")
                    r.pos += 1
                    c = r.skip_ws()
                    if c == "]":
                        raise r.error("trailing comma before ']'")
                first = False
                start_line = r.line_at(r.pos)
                while True:
                    try:
                        record, end = _decoder.raw_decode(r.buf, r.pos)
                        if end >= len(r.buf) and not r.eof and isinstance(record, (int, float)):
                            raise json.JSONDecodeError("number may continue", r.buf, end)
                        break
                    except json.JSONDecodeError as exc:
                        pending = len(r.buf) - r.pos
                        if not r.eof and pending < MAX_RECORD_BYTES and r.fill(max(CHUNK, pending)):
                            continue  # the record may just continue in the next chunk (read doubles each time)
                        if len(r.buf) - r.pos >= MAX_RECORD_BYTES:
                            raise r.error(f"a record larger than {MAX_RECORD_BYTES / (1 << 20):g} MB") from None
                        raise r.error(f"invalid JSON: {exc.msg}", exc.pos) from None
                if not isinstance(record, dict):
                    raise DataError(f"array items must be objects, got {type(record).__name__}", path, start_line)
                r.pos = end
                yield start_line, record
            if r.skip_ws() != "":
                raise r.error("extra data after the closing ']'")
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason})", path, r.line_at(r.pos)) from None
