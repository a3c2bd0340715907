"""Datasets already registered in the user's own LLaMA-Factory `dataset_info.json` (LazyLLM's `dataset_dir` mode).

    finetune.llamafactory(base, target, dataset_dir="data/")("alpaca_en_demo,identity")

With `dataset_dir`, the data is given by name (a name, "a,b", or a list); lazytune checks every name is registered
there and its file exists, then hands the names and the folder to LLaMA-Factory unchanged (no dataset_info.json of
its own). LazyLLM's sft.yaml placeholder `dataset_dir: lazyllm_temp_dir` means the usual mode (data files).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

#: LazyLLM's placeholder: "build a dataset_info.json from the data files" (lazytune's default anyway).
LAZYLLM_TEMP_DIR = "lazyllm_temp_dir"


def registered_dir(value: Any) -> Path | None:
    """The user's dataset folder, or None for the usual mode (no value, '' or LazyLLM's placeholder)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", LAZYLLM_TEMP_DIR)):
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"dataset_dir must be a folder path, got {value!r}")
    folder = Path(value).expanduser().absolute()
    if not (folder / "dataset_info.json").is_file():
        raise ConfigError(f"dataset_dir={str(value)!r}: {folder / 'dataset_info.json'} does not exist; dataset_dir is "
                          "the folder of your own LLaMA-Factory dataset_info.json (leave it out to pass data files)")
    return folder


def dataset_names(data: Any) -> list[str]:
    """Names from 'a', 'a,b' or ['a', 'b']."""
    items = [data] if isinstance(data, str) else list(data) if isinstance(data, (list, tuple)) else None
    if items is None or not all(isinstance(i, str) for i in items):
        raise DataError(f"with dataset_dir, the data is dataset names (a name, 'a,b' or a list), got {data!r}")
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if not names:
        raise DataError(f"no dataset name given (got {data!r}): with dataset_dir, pass names registered in its "
                        "dataset_info.json")
    return names


def registered_files(folder: Path, data: str | Sequence[str]) -> tuple[list[str], list[Path]]:
    """(names, their files) for `data` registered in `folder`/dataset_info.json; every problem in one DataError."""
    info_path = folder / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read: {exc}", info_path) from None
    if not isinstance(info, dict):
        raise DataError("must be a JSON object of {name: entry}", info_path)
    names, files, problems = dataset_names(data), [], []
    for name in names:
        entry = info.get(name)
        if not isinstance(entry, dict):
            close = difflib.get_close_matches(name, list(info), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f" (it has: {', '.join(info)})"
            problems.append(f"dataset {name!r} is not registered in {info_path}{hint}")
            continue
        file_name = entry.get("file_name")
        if not file_name:
            hub = next((k for k in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
                        if entry.get(k)), "no file_name")  # fmt: skip
            problems.append(f"dataset {name!r} in {info_path} is not a local file ({hub}): lazytune never downloads; "
                            "register a file_name")
            continue
        path = folder / file_name
        if not path.exists():
            problems.append(f"dataset {name!r}: its file {path} (file_name in {info_path}) does not exist")
            continue
        files.append(path.resolve())
    if problems:
        raise DataError("\n  - ".join(["problems with the registered datasets:", *problems]))
    return names, files
