"""LLaMA-Factory dataset_info.json for a run's data files, from one fast pass over every record of each file.

Formats recognised (LF's names): alpaca (instruction/input/output, optional system/history), sharegpt with
`conversations` (from/value) or `messages` (role/content), pretraining text (plain text lines or a `text` column),
preference data (chosen/rejected, alpaca or sharegpt: `ranking: true`), KTO (`kto_tag`, or a true/false `label` as
in LF's kto_en_demo.json); multimodal columns (images/videos/audios) and system/tools columns pass through. The union
over all records decides the entry (a column or role that first appears late is in it); records that disagree with
each other, and every stage's required fields, are errors naming the file and line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...datascan import Scan
from ...datascan import scan as scan_file
from ...errors import DataError
from ...plan import FileSpec

VALIDATE_BELOW = 512 << 20  # kept for benchmarks/run.py; every file is now checked whole
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
    scan: Scan | None = None


def describe(scan: Scan) -> tuple[str, dict[str, Any]]:
    """(kind, dataset_info entry without file_name) from the whole-file scan; DataError when the format is unknown
    or the records disagree with each other (the error names the first record that breaks the rule)."""
    path = Path(scan.path)
    if scan.format == "text":
        return "text", {"columns": {"prompt": "text"}}
    _check_types(scan)
    cols = set(scan.columns)
    media = {m: m for m in MEDIA if m in cols}
    if "conversations" in cols and "messages" in cols:
        first = max(min(scan.columns[c].values()) for c in ("conversations", "messages"))
        raise DataError("records mix 'conversations' and 'messages': use one of them per file", path, scan.line(first))
    if "conversations" in cols or "messages" in cols:
        return _sharegpt(scan, cols, media)
    if "text" in cols and not cols & {"instruction", "output", "chosen", "rejected"}:
        return "text", {"columns": {"prompt": "text"}}
    if "instruction" in cols or "output" in cols or "chosen" in cols:
        return _alpaca(scan, cols, media)
    v1 = sorted(cols & {"chosen_messages", "rejected_messages"})
    if v1:
        first = scan.line(min(scan.columns[v1[0]].values()))
        raise DataError(
            f"columns {v1} are the preference format of LLaMA-Factory's v1 engine (data/v1_dpo_demo.jsonl), which "
            "`llamafactory-cli train` (v0.9.5) does not read; write 'conversations' + 'chosen' + 'rejected' "
            "(sharegpt) or 'instruction' + 'chosen' + 'rejected' (alpaca)", path, first,
        )  # fmt: skip
    raise DataError(
        f"cannot tell the data format from the columns {sorted(cols)} of the records; expected alpaca "
        "(instruction/input/output), sharegpt (conversations or messages), preference pairs (chosen/rejected), "
        "or pretraining text ('text' column or a .txt file)", path, scan.line(1),
    )  # fmt: skip


def _check_types(scan: Scan) -> None:
    """A column must hold one JSON type in every record (null aside): LF's loader (pyarrow) refuses a column that
    is a string here and a list there, or reads it as something else."""
    for col, types in scan.columns.items():
        kinds = {t: pos for t, pos in types.items() if t != "null"}
        if len(kinds) > 1:
            ordered = sorted(kinds.items(), key=lambda kv: kv[1])
            (t1, p1), (t2, p2) = ordered[0], ordered[1]
            raise DataError(
                f"column {col!r} is a {t2} here but a {t1} in earlier records (first at line {scan.line(p1)}): "
                "use one type per column in the whole file", Path(scan.path), scan.line(p2),
            )  # fmt: skip


def _kto_column(scan: Scan, cols: set[str]) -> str | None:
    """The KTO flag column: `kto_tag`, or LF's demo spelling `label` when it holds true/false."""
    if "kto_tag" in cols:
        return "kto_tag"
    if "label" in cols and set(scan.columns["label"]) - {"null"} == {"bool"}:
        return "label"
    return None


def _alpaca(scan: Scan, cols: set[str], media: dict[str, str]) -> tuple[str, dict[str, Any]]:
    columns: dict[str, str] = {"prompt": "instruction"}
    if "input" in cols:
        columns["query"] = "input"
    for name in ("system", "history", "tools"):
        if name in cols:
            columns[name] = name
    info: dict[str, Any] = {}
    kto = _kto_column(scan, cols)
    if "chosen" in cols or "rejected" in cols:
        kind = "pairs"
        info["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    else:
        kind = "kto" if kto else "chat"
        columns["response"] = "output"
        if kto:
            columns["kto_tag"] = kto
    info["columns"] = {**columns, **media}
    return kind, info


def _sharegpt(scan: Scan, cols: set[str], media: dict[str, str]) -> tuple[str, dict[str, Any]]:
    path = Path(scan.path)
    key = "conversations" if "conversations" in cols else "messages"
    columns = {"messages": key, **{c: c for c in ("system", "tools") if c in cols}}
    shapes = {sig: first for sig, (first, _count) in scan.messages.items()}
    for (col, role_key, _roles, _contents), pos in sorted(shapes.items(), key=lambda kv: kv[1]):
        if role_key in ("not-objects", "mixed-keys"):
            what = "objects" if role_key == "not-objects" else "objects with the same role/content keys"
            raise DataError(f"'{col}' must be a list of messages ({what})", path, scan.line(pos))
    role_keys: dict[str, int] = {}
    for (_col, role_key, _roles, _contents), pos in shapes.items():
        if role_key and pos < role_keys.get(role_key, pos + 1):
            role_keys[role_key] = pos
    if not role_keys:
        raise DataError(f"'{key}' must be a list of messages (objects)", path, scan.line(1))
    if len(role_keys) > 1:  # LF reads one role key per file: the other records would fail to load
        later = max(role_keys.values())
        raise DataError(f"messages mix 'from'/'value' and 'role'/'content' keys (first at line "
                        f"{scan.line(min(role_keys.values()))}): use one style per file", path, scan.line(later))
    role = next(iter(role_keys))
    content = "value" if role == "from" else "content"
    for (col, _rk, _roles, contents), pos in sorted(shapes.items(), key=lambda kv: kv[1]):
        if "list" in contents or "dict" in contents:
            raise DataError(
                f"'{col}' has a message whose '{content}' is a list of parts: that is the format of LLaMA-Factory's "
                "v1 engine (data/v1_*_demo.jsonl), which `llamafactory-cli train` (v0.9.5) does not read; write each "
                f"'{content}' as one string", path, scan.line(pos),
            )  # fmt: skip
    roles: dict[str, int] = {}
    for (_col, _rk, seq, _contents), pos in shapes.items():
        for r in seq:
            if pos < roles.get(r, pos + 1):
                roles[r] = pos
    for (_col, r, _ctype), pos in scan.single.items():
        if r and pos < roles.get(r, pos + 1):
            roles[r] = pos
    tags = {"role_tag": role, "content_tag": content}
    for tag, known in (("user_tag", USER), ("assistant_tag", ASSISTANT), ("observation_tag", OBSERVATION),
                       ("function_tag", FUNCTION), ("system_tag", SYSTEM)):  # fmt: skip
        used = sorted((r for r in known if r in roles), key=roles.__getitem__)
        if len(used) > 1:  # LF takes one value per tag: the other messages would be dropped as invalid
            raise DataError(
                f"messages mix the {role!r} values {used} (first {used[0]!r} at line {scan.line(roles[used[0]])}): "
                "use one spelling per file", path, scan.line(roles[used[1]]),
            )  # fmt: skip
        if used:
            tags[tag] = used[0]
    unknown = sorted(r for r in roles if r not in {*USER, *ASSISTANT, *OBSERVATION, *FUNCTION, *SYSTEM})
    if unknown:
        raise DataError(f"unknown message {role!r} value(s) {unknown} in '{key}'", path, scan.line(roles[unknown[0]]))
    info: dict[str, Any] = {"formatting": "sharegpt"}
    kto = _kto_column(scan, cols)
    if "chosen" in cols or "rejected" in cols:
        kind = "pairs"
        info["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    elif kto:
        kind = "kto"
        columns["kto_tag"] = kto
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
        fields += [] if "messages" in cols else [cols["response"]]
    elif "response" in cols:
        fields.append(cols["response"])
    return fields


def check_required(scan: Scan, fields: list[str | tuple[str, ...]], kind: str, info: dict[str, Any]) -> None:
    """Every record has each required field (not empty); a KTO flag is true or false in every record."""
    path = Path(scan.path)
    for field in fields:
        names = field if isinstance(field, tuple) else (field,)
        pos = scan.first_without(names)
        if pos is not None:
            raise DataError(f"record is missing {' or '.join(map(repr, names))} (or it is empty)", path,
                            scan.line(pos))  # fmt: skip
    if kind == "kto":
        flag = info["columns"]["kto_tag"]
        types = scan.columns.get(flag, {})
        if "null" in types or set(types) - {"bool"}:
            bad = types.get("null") or min(p for t, p in types.items() if t != "bool")
            raise DataError(f"record has no true/false {flag!r} (KTO needs one per example)", path, scan.line(bad))


def lf_skips(scan: Scan, kind: str, info: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Records LF's sharegpt converter will skip ("Skipping this abnormal example"): (reason, count, first line).
    The rules of LF 0.9.5's SharegptDatasetConverter: an optional system message first, then user/observation and
    assistant/function_call alternating, an even number of messages (odd for preference data)."""
    if info.get("formatting") != "sharegpt":
        return []
    tags = info["tags"]
    odd = {tags.get("user_tag", "human"), tags.get("observation_tag", "observation")}
    even = {tags.get("assistant_tag", "gpt"), tags.get("function_tag", "function_call")}
    system = tags.get("system_tag", "system")
    ranking = bool(info.get("ranking"))
    found: dict[str, list[int]] = {}
    for (col, _rk, seq, _contents), (pos, count) in scan.messages.items():
        if col != info["columns"]["messages"]:
            continue
        msgs = seq[1:] if seq and seq[0] == system else seq
        reason = None
        for i, r in enumerate(msgs):
            if r not in (odd, even)[i % 2]:
                reason = f"messages out of order ({' → '.join(seq)})"
                break
        if reason is None and (len(msgs) % 2 == 0) == ranking:
            reason = "an odd number of messages" if not ranking else "an even number of messages before the pair"
        if reason is None and not msgs and not ranking:
            reason = "no messages"
        if reason:
            entry = found.setdefault(reason, [0, pos])
            entry[0] += count
            entry[1] = min(entry[1], pos)
    lines = scan.lines([pos for _count, pos in found.values()])
    return [(reason, count, lines[pos]) for reason, (count, pos) in found.items()]


def entry_for(path: Path, name: str, stage: str, links_dir: Path, validate: bool | None = None) -> DatasetEntry:
    """The dataset_info entry for one file, from a scan of all of its records, checked against the stage.
    `validate` is kept for callers of the old head-only sniff: every file is now read whole."""
    scan = scan_file(path)
    kind, info = describe(scan)
    wanted = NEEDS.get(stage, ("chat",))
    if kind not in wanted:
        need = " or ".join(KIND_NAMES[k] for k in wanted)
        fields = {"pairs": " (missing fields: 'chosen', 'rejected')", "kto": " (missing field: 'kto_tag')"}
        raise DataError(
            f"stage {stage!r} needs {need}{fields.get(wanted[0], '')}, but this file holds {KIND_NAMES[kind]} "
            f"(columns: {sorted(scan.columns) or ['text']})", path,
        )  # fmt: skip
    check_required(scan, required_fields(kind, info), kind, info)
    target = path
    if path.suffix not in LF_OK_SUFFIXES[scan.format]:
        target = links_dir / f"{name}{LF_SUFFIX[scan.format]}"
    return DatasetEntry(name, target, path, kind, {"file_name": str(target), **info}, scan)


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


def media_dir(entries: Sequence[DatasetEntry], given: str | os.PathLike | None) -> Path | None:
    """The `media_dir` LF needs so that every image/video/audio path of the data resolves as the user meant it:
    relative paths are relative to the data file's folder (as in LF's own data/ folder) unless `given`. LF has one
    media_dir per run, so files in different folders that both use relative media paths need `media_dir=`. Every
    referenced file must exist (DataError naming the file, the line and the first few missing paths)."""
    users = [e for e in entries if e.scan is not None and any(e.scan.media.values())]
    if not users:
        return Path(given).expanduser() if given else None
    folders = {e.source.parent for e in users if _has_relative_media(e.scan)}
    if given:
        root = Path(given).expanduser().resolve()
    elif len(folders) > 1:
        raise DataError(
            f"data files in different folders use relative media paths ({', '.join(sorted(map(str, folders)))}); "
            "LLaMA-Factory resolves all of them against one media_dir: pass media_dir=<folder they are relative to>"
        )  # fmt: skip
    else:
        root = next(iter(folders), users[0].source.parent)
    for e in users:
        missing: list[tuple[int, str]] = []
        for column, seen in e.scan.media.items():
            for name, pos in seen.items():
                if "://" in name:
                    continue  # LF reads URLs itself
                if not (root / name).is_file():
                    missing.append((pos, f"{column}: {name}"))
        if missing:
            missing.sort()
            shown = "; ".join(f"{what} (line {e.scan.line(pos)})" for pos, what in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(f"{len(missing)} media file(s) not found under {root}: {shown}{more}", e.source,
                            e.scan.line(missing[0][0]))  # fmt: skip
    return root


def _has_relative_media(scan: Scan) -> bool:
    return any(not os.path.isabs(n) and "://" not in n for seen in scan.media.values() for n in seen)
