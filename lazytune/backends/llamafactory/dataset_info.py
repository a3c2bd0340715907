"""LLaMA-Factory dataset_info.json for a run's data files, from a streaming read of each file's head.

Formats recognised (LF's names): alpaca (instruction/input/output, optional system/history), sharegpt with
`conversations` (from/value) or `messages` (role/content), pretraining text (plain text lines or a `text` column),
preference data (chosen/rejected, alpaca or sharegpt: `ranking: true`), KTO (`kto_tag`); multimodal columns
(images/videos/audios) and system/tools columns pass through. Every stage checks the data has what it needs and the
error names the file, the line and the missing fields.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...data import Sniffed, iter_records, sniff
from ...errors import DataError
from ...plan import FileSpec

VALIDATE_BELOW = 512 << 20  # full record check by default for files smaller than this (bytes)
LF_SUFFIX = {"text": ".txt", "jsonl": ".jsonl", "json": ".json"}  # LF picks its loader from the file extension
LF_OK_SUFFIXES = {"text": (".txt",), "jsonl": (".json", ".jsonl"), "json": (".json", ".jsonl")}
MEDIA = ("images", "videos", "audios")
USER, ASSISTANT = ("human", "user"), ("gpt", "assistant", "model", "bot")
OBSERVATION, FUNCTION, SYSTEM = ("observation", "tool", "ipython"), ("function_call",), ("system",)
NEEDS = {  # stage -> the kinds of data it trains on
    "pt": ("text",), "sft": ("chat",), "ppo": ("chat",), "rm": ("pairs",), "dpo": ("pairs",), "orpo": ("pairs",),
    "kto": ("kto",),
}  # fmt: skip
KIND_NAMES = {"text": "plain text (a .txt file, or a 'text' column)", "chat": "instruction/output or conversations",
              "pairs": "preference pairs ('chosen' and 'rejected')", "kto": "a 'kto_tag' (true/false) per example"}


@dataclass(frozen=True)
class LinkSpec(FileSpec):
    """A symlink the plan creates (`content` is its target): gives a data file the extension LF's loader needs."""

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(self.content, tmp)
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: Path  # what LF reads (the file itself, or a link to it with the right extension)
    source: Path
    kind: str  # text | chat | pairs | kto
    info: dict[str, Any]


def describe(sniffed: Sniffed) -> tuple[str, dict[str, Any]]:
    """(kind, dataset_info entry without file_name) for a sniffed file; DataError when the format is unknown."""
    path, first = sniffed.path, sniffed.sample[0]
    if sniffed.format == "text":
        return "text", {"columns": {"prompt": "text"}}
    cols = set(first)
    media = {m: m for m in MEDIA if m in cols}
    if "conversations" in cols or "messages" in cols:
        return _sharegpt(sniffed, cols, media)
    if "text" in cols and not cols & {"instruction", "output", "chosen", "rejected"}:
        return "text", {"columns": {"prompt": "text"}}
    if "instruction" in cols or "output" in cols or "chosen" in cols:
        return _alpaca(cols, media)
    raise DataError(
        f"cannot tell the data format from the columns {sorted(cols)} of the first record; expected alpaca "
        "(instruction/input/output), sharegpt (conversations or messages), preference pairs (chosen/rejected), "
        "or pretraining text ('text' column or a .txt file)", path, 1,
    )  # fmt: skip


def _alpaca(cols: set[str], media: dict[str, str]) -> tuple[str, dict[str, Any]]:
    columns: dict[str, str] = {"prompt": "instruction"}
    if "input" in cols:
        columns["query"] = "input"
    for name in ("system", "history", "tools"):
        if name in cols:
            columns[name] = name
    info: dict[str, Any] = {}
    if "chosen" in cols or "rejected" in cols:
        kind = "pairs"
        info["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    else:
        kind = "kto" if "kto_tag" in cols else "chat"
        columns["response"] = "output"
        if kind == "kto":
            columns["kto_tag"] = "kto_tag"
    info["columns"] = {**columns, **media}
    return kind, info


def _sharegpt(sniffed: Sniffed, cols: set[str], media: dict[str, str]) -> tuple[str, dict[str, Any]]:
    key = "conversations" if "conversations" in cols else "messages"
    columns = {"messages": key, **{c: c for c in ("system", "tools") if c in cols}}
    messages = []
    for rec in sniffed.sample:
        for field in (key, "chosen", "rejected"):
            value = rec.get(field)
            messages += value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    style = next((m for m in messages if isinstance(m, dict)), None)
    if style is None:
        raise DataError(f"'{key}' must be a list of messages (objects)", sniffed.path, 1)
    role, content = ("from", "value") if "from" in style else ("role", "content")
    roles = {m.get(role) for m in messages if isinstance(m, dict)}
    tags = {"role_tag": role, "content_tag": content}
    for tag, known in (("user_tag", USER), ("assistant_tag", ASSISTANT), ("observation_tag", OBSERVATION),
                       ("function_tag", FUNCTION), ("system_tag", SYSTEM)):  # fmt: skip
        used = [r for r in known if r in roles]
        if len(used) > 1:  # LF takes one value per tag: the other messages would be dropped as invalid
            raise DataError(f"messages mix the {role!r} values {used}: use one spelling per file", sniffed.path)
        if used:
            tags[tag] = used[0]
    unknown = roles - {*USER, *ASSISTANT, *OBSERVATION, *FUNCTION, *SYSTEM}
    if unknown:
        raise DataError(f"unknown message {role!r} value(s) {sorted(map(str, unknown))} in '{key}'", sniffed.path)
    info: dict[str, Any] = {"formatting": "sharegpt"}
    if "chosen" in cols or "rejected" in cols:
        kind = "pairs"
        info["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    elif "kto_tag" in cols:
        kind = "kto"
        columns["kto_tag"] = "kto_tag"
    else:
        kind = "chat"
    info.update(columns={**columns, **media}, tags=tags)
    return kind, info


def required_fields(kind: str, info: dict[str, Any]) -> list[str | tuple[str, ...]]:
    """Fields every record of this kind must have, not empty (a tuple: at least one of them)."""
    cols = info["columns"]
    if kind == "text":
        return []
    fields: list[str | tuple[str, ...]] = (
        [cols["messages"]] if info.get("formatting") == "sharegpt" else [(cols["prompt"], cols.get("query", "input"))]
    )
    if kind == "pairs":
        fields += ["chosen", "rejected"]
    elif kind == "kto":
        fields += ["kto_tag"] if "messages" in cols else [cols["response"], "kto_tag"]
    elif "response" in cols:
        fields.append(cols["response"])
    return fields


def check_record(path: Path, line: int, record: Any, fields: list[str | tuple[str, ...]]) -> None:
    if not isinstance(record, dict):  # text lines are always fine
        return
    missing = []
    for field in fields:
        names = field if isinstance(field, tuple) else (field,)
        if all(record.get(n) in (None, "", []) for n in names):
            missing.append(" or ".join(map(repr, names)))
    if missing:
        raise DataError(f"record is missing {', '.join(missing)} (it has: {sorted(record)})", path, line)


def entry_for(path: Path, name: str, stage: str, links_dir: Path, validate: bool | None) -> DatasetEntry:
    """The dataset_info entry for one file, checked against the stage."""
    sniffed = sniff(path)
    kind, info = describe(sniffed)
    wanted = NEEDS.get(stage, ("chat",))
    if kind not in wanted:
        need = " or ".join(KIND_NAMES[k] for k in wanted)
        fields = {"pairs": " (missing fields: 'chosen', 'rejected')", "kto": " (missing field: 'kto_tag')"}
        raise DataError(
            f"stage {stage!r} needs {need}{fields.get(wanted[0], '')}, but this file holds {KIND_NAMES[kind]} "
            f"(columns: {sorted(sniffed.columns) or ['text']})", path,
        )  # fmt: skip
    fields = required_fields(kind, info)
    full = validate if validate is not None else path.stat().st_size < VALIDATE_BELOW
    records = iter_records(path, sniffed.format) if full else iter(enumerate(sniffed.sample, 1))
    for line, record in records:
        check_record(path, line, record, fields)
    target = path
    if path.suffix not in LF_OK_SUFFIXES[sniffed.format]:
        target = links_dir / f"{name}{LF_SUFFIX[sniffed.format]}"
    return DatasetEntry(name, target, path, kind, {"file_name": str(target), **info})


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Dataset names from file stems, made unique (`train`, `train_2`, ...) and safe for LF's comma-separated list."""
    names: list[str] = []
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_") or "data"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def dataset_info(paths: Sequence[Path], stage: str, run_dir: Path, validate: bool | None = None
                 ) -> tuple[list[DatasetEntry], list[FileSpec]]:
    """Entries for `paths` and the files to write: `<run_dir>/dataset_info.json` (+ links for odd extensions)."""
    names = unique_names(paths)
    entries = [entry_for(p, n, stage, run_dir / "data", validate) for p, n in zip(paths, names, strict=True)]
    info = {e.name: e.info for e in entries}
    files: list[FileSpec] = [LinkSpec(e.path, str(e.source)) for e in entries if e.path != e.source]
    files.append(FileSpec(run_dir / "dataset_info.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n"))
    return entries, files
