"""One fast pass over every record of a data file: what columns, value types and message roles it holds.

The summary (a `Scan`) is what decides a file's dataset entry: the union over all records, not a sniff of the head.
Records are parsed with msgspec, streamed (JSON lines by chunk, JSON arrays by cutting the byte stream at record
boundaries and parsing a few MB of records in one call), so memory stays constant whatever the file size. The fast
path decodes into a struct typed from the first records (msgspec checks every value's type and that no other column
appears, in C); any surprise falls back to the general path over plain dicts, which gives the same summary. The
summary is built column by column over each batch (C-level loops), and every fact keeps the position of the first
record that shows it, so any rule broken later can name the line.

Scans are cached under $LAZYTUNE_HOME/cache/scans, keyed by path, size, mtime, inode and a hash of head and tail.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

import msgspec

from . import data as _data
from .data import _iter_json_array, detect_format
from .errors import DataError

SCAN_VERSION = 3
CHUNK = 4 << 20
HEAD = 256 << 10  # bytes read to type the fast path
MESSAGE_LISTS = ("conversations", "messages", "chosen", "rejected")  # columns that may hold lists of messages
MEDIA = ("images", "videos", "audios")
TYPE_NAMES = {str: "str", list: "list", dict: "dict", bool: "bool", int: "number", float: "number",
              type(None): "null"}  # fmt: skip
_WS = b" \t\r\n"
_decode = msgspec.json.decode
BOTH_EMPTY = (("instruction", "input"),)  # alpaca: a prompt needs one of them


@dataclass
class Scan:
    """What every record of one file holds. Positions are line numbers for JSON lines and text, record numbers
    (1-based) for JSON arrays: `line()` turns either into a line number."""

    path: str
    format: str  # json | jsonl | text
    records: int = 0
    # column -> {type name: first position}; 'null' is a value that is null or a record without the column
    columns: dict[str, dict[str, int]] = field(default_factory=dict)
    # column -> first position where it is missing, null or empty ("", [], {}, false, 0)
    empty: dict[str, int] = field(default_factory=dict)
    # "a|b" -> first position where both columns are empty (only for the pairs in BOTH_EMPTY)
    both_empty: dict[str, int] = field(default_factory=dict)
    # (column, role key, role tuple, content type names) -> [first position, count], for message lists
    messages: dict[tuple, list[int]] = field(default_factory=dict)
    # (column, role, content type name) -> first position, for single messages (sharegpt chosen/rejected)
    single: dict[tuple, int] = field(default_factory=dict)
    # media column -> {path as written: first position}
    media: dict[str, dict[str, int]] = field(default_factory=dict)

    def line(self, pos: int) -> int:
        """The line number of a position (re-reads a JSON array up to that record: only for messages)."""
        return self.lines([pos])[pos]

    def lines(self, positions: list[int]) -> dict[int, int]:
        """Line numbers of several positions, in one read of a JSON array up to the last of them."""
        if self.format != "json" or not positions:
            return {p: p for p in positions}
        wanted, last, out = set(positions), max(positions), {}
        for n, (line, _) in enumerate(_iter_json_array(Path(self.path)), 1):
            if n in wanted:
                out[n] = line
            if n >= last:
                break
        return {p: out.get(p, p) for p in positions}

    def first_without(self, names: tuple[str, ...]) -> int | None:
        """First position of a record where every column in `names` is missing, null or empty."""
        present = [n for n in names if n in self.columns]
        if len(present) == 2:
            return self.both_empty.get("|".join(present))
        if len(present) == 1:
            return self.empty.get(present[0])
        return 1 if self.records else None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "records": self.records, "columns": self.columns,
                "empty": self.empty, "both_empty": self.both_empty,
                "messages": [[list(k[:2]) + [list(k[2]), list(k[3])], v] for k, v in self.messages.items()],
                "single": [[list(k), v] for k, v in self.single.items()], "media": self.media}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scan:
        return cls(d["path"], d["format"], d["records"], d["columns"], d["empty"], d["both_empty"],
                   {(k[0], k[1], tuple(k[2]), tuple(k[3])): v for k, v in d["messages"]},
                   {tuple(k): v for k, v in d["single"]}, d["media"])  # fmt: skip


# -- fast record streams ---------------------------------------------------------------------------------------------
def fast_batches(path: Path, fmt: str, chunk: int | None = None) -> Iterator[tuple[Sequence[int], list]]:
    """(positions, records) in batches of a few MB, positions as in `Scan`. Any parse problem is re-read by the
    careful stdlib reader of lazytune.data, whose error names the line."""
    if fmt == "json":
        yield from _fast_array(path, chunk)
    elif fmt == "jsonl":
        yield from _fast_lines(path, chunk)
    else:
        from .data import _iter_lines

        for line, text in _iter_lines(path, "text"):
            yield [line], [text]


def fast_records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(position, record) for every record."""
    for positions, records in fast_batches(path, fmt):
        yield from zip(positions, records, strict=True)


def _chunks(path: Path, size: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size or CHUNK):
            yield chunk


def _fast_lines(path: Path, size: int | None = None) -> Iterator[tuple[Sequence[int], list]]:
    from .data import _iter_lines

    number, rest, loads = 0, b"", _decode
    for chunk in _chunks(path, size):
        buf = rest + chunk
        cut = buf.rfind(b"\n") + 1
        if not cut:
            if len(buf) > _data.MAX_RECORD_BYTES:
                break  # the careful reader reports the oversized line
            rest = buf
            continue
        rest = buf[cut:]
        lines = buf[:cut].split(b"\n")
        lines.pop()
        if number == 0 and lines[0].startswith(b"\xef\xbb\xbf"):
            lines[0] = lines[0][3:]
        positions: list[int] = []
        records: list = []
        limit = _data.MAX_RECORD_BYTES
        for raw in lines:
            number += 1
            if not raw.strip():
                continue
            if len(raw) > limit:
                yield positions, records
                yield from _careful_batches(_iter_lines(path, "jsonl"), number - 1)
                return
            try:
                rec = loads(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                rec = None
            if type(rec) is not dict:
                yield positions, records
                yield from _careful_batches(_iter_lines(path, "jsonl"), number - 1)
                return
            positions.append(number)
            records.append(rec)
        yield positions, records
    if rest.strip():
        number += 1
        try:
            rec = loads(rest[3:] if number == 1 and rest.startswith(b"\xef\xbb\xbf") else rest)
        except (msgspec.DecodeError, UnicodeDecodeError):
            rec = None
        if type(rec) is dict:
            yield [number], [rec]
            return
        yield from _careful_batches(_iter_lines(path, "jsonl"), number - 1)
    elif len(rest) > _data.MAX_RECORD_BYTES:
        yield from _careful_batches(_iter_lines(path, "jsonl"), number)


def _careful_batches(records: Iterator[tuple[int, Any]], after: int, ordinal: bool = False
                     ) -> Iterator[tuple[Sequence[int], list]]:
    """Go on with the careful stdlib reader from the position after `after`: it raises the precise error (with
    the line), or reads what msgspec refused but the stdlib accepts (NaN, Infinity)."""
    for n, (line, rec) in enumerate(records, 1):
        pos = n if ordinal else line
        if pos > after:
            yield [pos], [rec]


def _fast_array(path: Path, size: int | None = None) -> Iterator[tuple[Sequence[int], list]]:
    """A top-level JSON array, cut at `},` boundaries; a cut inside a string or a nested value never parses (an
    unclosed string or bracket), so a successful parse of `[` + piece + `]` is exactly the records of the piece."""
    done, buf, started, loads = 0, b"", False, _decode
    for chunk in _chunks(path, size):
        buf += chunk
        if not started:
            head = buf.lstrip(_WS)
            if head.startswith(b"\xef\xbb\xbf"):
                head = head[3:].lstrip(_WS)
            if not head:
                continue
            if head[:1] != b"[":
                break
            buf, started = bytearray(head), True
        records, buf = _parse_pieces(buf, loads)
        if records is None:
            if len(buf) > _data.MAX_RECORD_BYTES:
                break
            continue
        good = _objects_prefix(records)
        yield range(done + 1, done + 1 + good), records if good == len(records) else records[:good]
        done += good
        if good < len(records):
            break
    else:
        try:
            records = loads(buf) if started else None
        except (msgspec.DecodeError, UnicodeDecodeError):
            records = None
        if records == [] and done:
            records = None  # "[{...},]": the comma of the last cut had no record after it
        if records is not None:
            good = _objects_prefix(records)
            yield range(done + 1, done + 1 + good), records[:good]
            done += good
            if good == len(records):
                return
    yield from _careful_batches(_iter_json_array(path), done, ordinal=True)


def _objects_prefix(records: list) -> int:
    """How many records from the start are objects."""
    if all(type(r) is dict for r in records):
        return len(records)
    return next(i for i, r in enumerate(records) if type(r) is not dict)


def _parse_pieces(buf: bytearray, loads: Any) -> tuple[list | None, bytearray]:
    """Parse the records before the last record boundary of `buf` (which starts with '[') that parses; (None, buf)
    when none does. The cut comma becomes ']' in place and the parser reads a view: no copy of the batch."""
    end = len(buf)
    for _ in range(8):  # a few cuts may fall inside strings that contain '},'; then wait for more data
        comma = buf.rfind(b",", 1, end)
        while comma > 0:
            i = comma - 1
            while i > 0 and buf[i] in _WS:
                i -= 1
            if buf[i] == 0x7D:  # '}'
                break
            comma = buf.rfind(b",", 1, comma)
        if comma <= 0:
            return None, buf
        buf[comma] = 0x5D  # ']'
        try:
            with memoryview(buf) as view:
                records = loads(view[: comma + 1])
        except msgspec.ValidationError:
            raise _Untyped from None  # the typed path: a value of another type (or a column the head did not have)
        except (msgspec.DecodeError, UnicodeDecodeError):
            buf[comma] = 0x2C  # ','
            end = comma
            continue
        rest = bytearray(b"[")
        rest += buf[comma + 1 :]
        return records, rest
    return None, buf


# -- the scan --------------------------------------------------------------------------------------------------------
def scan(path: Path, use_cache: bool = True) -> Scan:
    """The whole-file summary of `path` (from the cache when the file is unchanged)."""
    key = _cache_key(path) if use_cache else None
    cached = _cache_load(key) if key else None
    if cached is not None:
        return cached
    result = _scan(path)
    if key:
        _cache_store(key, result)
    return result


def _scan(path: Path, typed: bool = True) -> Scan:
    fmt = detect_format(path)
    out = Scan(str(path), fmt)
    if fmt == "text":
        out.records = sum(1 for _ in _text_lines(path))
        return out
    if typed:
        try:
            return _scan_typed(path, fmt)
        except _Untyped:
            pass  # the general path gives the same summary, or the error with its line
    for positions, records in fast_batches(path, fmt):
        if records:
            _scan_batch(out, positions, records)
        out.records += len(records)
    if not out.records:
        raise DataError("no records (an empty array or only blank lines)", path)
    return out


def _scan_batch(out: Scan, positions: Sequence[int], records: list[dict]) -> None:
    """Add one batch to the summary, column by column: each step is one C-level loop over the batch (a loop in
    Python per record would cost more than parsing it)."""
    values: dict[str, list] = {}
    batch_cols = set().union(*records)
    for col in batch_cols - out.columns.keys():
        if out.records:  # a column first seen now: the records before it lack it
            out.columns[col] = {"null": 1}
            out.empty[col] = 1
    for col in batch_cols | out.columns.keys():
        vals = values[col] = list(map(dict.get, records, repeat(col)))
        seen = out.columns.setdefault(col, {})
        for t in set(map(type, vals)):
            name = TYPE_NAMES.get(t, "other")
            if name not in seen:
                seen[name] = positions[next(i for i, v in enumerate(vals) if type(v) is t)]
        if col not in out.empty and not all(vals):
            out.empty[col] = positions[next(i for i, v in enumerate(vals) if not v)]
        if col in MEDIA or col in MESSAGE_LISTS:
            _special(col, vals, positions, out)
    _both_empty(out, positions, records, values)


def _both_empty(out: Scan, positions: Sequence[int], records: list, values: dict[str, list]) -> None:
    for a, b in BOTH_EMPTY:
        key = f"{a}|{b}"
        if (a not in values and b not in values) or key in out.both_empty:
            continue
        if a in values and all(values[a]) or b in values and all(values[b]):
            continue  # one of the two is never empty in this batch
        none = [None] * len(records)
        pairs = list(zip(values.get(a, none), values.get(b, none), strict=True))
        if not all(map(any, pairs)):
            out.both_empty[key] = positions[next(i for i, v in enumerate(pairs) if not any(v))]


class _Untyped(Exception):
    """The typed fast path cannot read this file (a new column, a value of another type, malformed JSON)."""


PY_TYPES = {"str": str, "list": list, "dict": dict, "bool": bool, "number": int | float}


def _scan_typed(path: Path, fmt: str) -> Scan:
    head = Scan(str(path), fmt)
    for positions, records in fast_batches(path, fmt, HEAD):  # the first records give the struct's columns
        if records:
            _scan_batch(head, positions, records)
            break
    fields, names = [], []
    for i, (col, types) in enumerate(head.columns.items()):
        kinds = [t for t in types if t != "null"]
        if len(kinds) > 1 or (kinds and kinds[0] not in PY_TYPES):
            raise _Untyped
        fields.append((f"f{i}", (PY_TYPES[kinds[0]] | None) if kinds else type(None), None))
        names.append(col)
    if not fields:
        raise _Untyped
    rec = msgspec.defstruct("Record", fields, rename={f"f{i}": c for i, c in enumerate(names)},
                            forbid_unknown_fields=True, gc=False)  # fmt: skip
    decoder = msgspec.json.Decoder(list[rec])
    out = Scan(str(path), fmt)
    out.columns = {c: {} for c in names}
    getters = [(c, attrgetter(f"f{i}")) for i, c in enumerate(names)]
    batches = _typed_array(path, decoder.decode) if fmt == "json" else _typed_lines(path, decoder.decode)
    for positions, records in batches:
        if records:
            _typed_batch(out, positions, records, getters)
        out.records += len(records)
    if not out.records:
        raise _Untyped
    out.columns = {c: t for c, t in out.columns.items() if t}
    return out


def _typed_batch(out: Scan, positions: Sequence[int], records: list, getters: list) -> None:
    values: dict[str, list] = {}
    for col, get in getters:
        vals = values[col] = list(map(get, records))
        seen = out.columns[col]
        full = all(vals)  # the common case: no null, no empty value, nothing more to look at
        if not full and "null" not in seen and None in vals:
            seen["null"] = positions[vals.index(None)]
        if len(seen) - ("null" in seen) == 0:
            first = next((i for i, v in enumerate(vals) if v is not None), None)
            if first is not None:
                seen[TYPE_NAMES.get(type(vals[first]), "other")] = positions[first]
        if not full and col not in out.empty:
            out.empty[col] = positions[next(i for i, v in enumerate(vals) if not v)]
        if col in MEDIA or col in MESSAGE_LISTS:
            _special(col, vals, positions, out)
    _both_empty(out, positions, records, values)


def _typed_array(path: Path, decode: Any) -> Iterator[tuple[Sequence[int], list]]:
    done, buf, started = 0, b"", False
    for chunk in _chunks(path):
        buf += chunk
        if not started:
            head = buf.lstrip(_WS)
            if head.startswith(b"\xef\xbb\xbf"):
                head = head[3:].lstrip(_WS)
            if not head:
                continue
            if head[:1] != b"[":
                raise _Untyped
            buf, started = bytearray(head), True
        records, buf = _parse_pieces(buf, decode)
        if records is None:
            if len(buf) > _data.MAX_RECORD_BYTES:
                raise _Untyped
            continue
        yield range(done + 1, done + 1 + len(records)), records
        done += len(records)
    try:
        records = decode(buf) if started else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _Untyped from None
    if records is None or (records == [] and done):
        raise _Untyped
    yield range(done + 1, done + 1 + len(records)), records


def _typed_lines(path: Path, decode: Any) -> Iterator[tuple[Sequence[int], list]]:
    """JSON lines as arrays of a few MB: newlines become commas (a JSON line holds no raw newline, so a record
    that spans lines, a blank line or two records on one line never decodes to one record per line)."""
    number, rest, limit = 0, b"", _data.MAX_RECORD_BYTES
    for chunk in _chunks(path):
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest += chunk
            if len(rest) > limit:
                raise _Untyped
            continue
        block = bytearray(b"[")
        block += rest
        with memoryview(chunk) as view:
            block += view[:cut]
        rest = chunk[cut + 1 :]
        yield from _typed_block(block, number, decode, limit)
        number += block.count(b"\n") + 1
    if rest.strip():
        yield from _typed_block(bytearray(b"[") + rest, number, decode, limit)


def _typed_block(block: bytearray, number: int, decode: Any, limit: int) -> Iterator[tuple[Sequence[int], list]]:
    if number == 0 and block.startswith(b"[\xef\xbb\xbf"):
        del block[1:4]
    lines = block.count(b"\n") + 1
    if len(block) > limit and max(map(len, block.split(b"\n"))) > limit:
        raise _Untyped  # the general path names the oversized line
    data = block.replace(b"\n", b",")
    data += b"]"
    try:
        records = decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _Untyped from None
    if len(records) != lines:
        raise _Untyped
    yield range(number + 1, number + 1 + lines), records


def _special(col: str, vals: list, positions: Sequence[int], out: Scan) -> None:
    """Message lists (roles, content types) and media paths of one column of a batch."""
    if col in MEDIA:
        seen = out.media.setdefault(col, {})
        for pos, value in zip(positions, vals, strict=True):
            if value:
                _media(seen, value, pos)
        return
    for pos, value in zip(positions, vals, strict=True):
        if type(value) is list:
            sig = _message_shape(col, value)
            seen = out.messages.get(sig)
            if seen is None:
                out.messages[sig] = [pos, 1]
            else:
                seen[1] += 1
        elif type(value) is dict:
            role = "role" if "role" in value else "from" if "from" in value else ""
            content = value.get("content" if role == "role" else "value")
            sig = (col, str(value.get(role)) if role else "", TYPE_NAMES.get(type(content), "other"))
            if sig not in out.single:
                out.single[sig] = pos


def _message_shape(col: str, msgs: list) -> tuple:
    """(column, role key, roles, content types) of a message list; odd lists get a role key that says so."""
    first = msgs[0] if msgs else None
    if type(first) is not dict:
        return (col, "" if not msgs else "not-objects", (), ())
    role_key, content_key = ("role", "content") if "role" in first else ("from", "value")
    try:
        roles = tuple(map(itemgetter(role_key), msgs))
        contents = tuple(TYPE_NAMES.get(t, "other") for t in map(type, map(itemgetter(content_key), msgs)))
    except (KeyError, TypeError):
        return (col, "mixed-keys", (), ())
    return (col, role_key, tuple(map(str, roles)), contents)


def _media(seen: dict[str, int], value: Any, pos: int) -> None:
    items = value if type(value) is list else [value] if value else []
    for item in items:
        for one in item if type(item) is list else [item]:  # video frames: a list of image paths
            if type(one) is str and one not in seen:
                seen[one] = pos


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    from .data import _iter_lines

    yield from _iter_lines(path, "text")


# -- cache -----------------------------------------------------------------------------------------------------------
def _cache_key(path: Path) -> dict[str, Any] | None:
    try:
        st = path.stat()
        with open(path, "rb") as f:
            head = f.read(1 << 16)
            if st.st_size > 2 << 16:
                f.seek(-(1 << 16), os.SEEK_END)
            tail = f.read(1 << 16)
    except OSError:
        return None
    digest = hashlib.sha256(head + b"\0" + tail).hexdigest()
    return {"version": SCAN_VERSION, "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino, "hash": digest}  # fmt: skip


def _cache_file(key: dict[str, Any]) -> Path:
    from .config import settings

    name = hashlib.sha256(key["path"].encode()).hexdigest()[:32]
    return settings().cache_dir / "scans" / f"{name}.json"


def _cache_load(key: dict[str, Any]) -> Scan | None:
    try:
        data = _decode(_cache_file(key).read_bytes())
        return Scan.from_json(data["scan"]) if data.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_store(key: dict[str, Any], result: Scan) -> None:
    """Best effort: a cache that cannot be written only costs the next plan a re-scan."""
    from .plan import FileSpec

    try:
        text = json.dumps({"key": key, "scan": result.to_json()}, ensure_ascii=False)
        FileSpec(_cache_file(key), text).write()
    except OSError:
        pass
