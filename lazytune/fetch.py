"""Data from URLs (any fsspec URL: s3://, gs://, http(s)://, memory://, ...) and results to URLs.

`fetch(url)` downloads a file once into a content-addressed cache, `$LAZYTUNE_HOME/cache/data/<sha256>/<name>`
(the original file name is kept: format detection reads its suffix). An index per URL remembers what the remote
file looked like (size, ETag, modification time): a later call that finds the same fingerprint uses the cached copy
without downloading again; a changed remote file is downloaded again. `upload(folder, url)` copies a finished
result folder to a URL. fsspec (and s3fs / gcsfs / aiohttp for their protocols) is only needed by users of URLs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .config import settings
from .errors import DataError
from .plan import FileSpec

FINGERPRINT_KEYS = ("size", "ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created", "md5Hash")
PACKAGE_FOR = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp", "https": "aiohttp",
               "az": "adlfs", "abfs": "adlfs", "hf": "huggingface_hub"}  # fmt: skip


def safe_url(url: str) -> str:
    """The URL without credentials or query string (for messages and manifests)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_name(url: str) -> str:
    """The file name a URL ends with (query string dropped); 'data' when it has none."""
    name = Path(urlsplit(url).path).name
    return re.sub(r"[^\w.+-]", "_", name) or "data"


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as exc:
        raise DataError(f"{safe_url(url)}: reading URLs needs fsspec (pip install fsspec)") from exc
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        package = PACKAGE_FOR.get(urlsplit(url).scheme, "the fsspec driver for it")
        raise DataError(f"{safe_url(url)}: this protocol needs {package} (pip install {package}): {exc}") from exc
    except ValueError as exc:
        raise DataError(f"{safe_url(url)}: not a URL fsspec knows: {exc}") from exc


def _fingerprint(info: dict[str, Any]) -> dict[str, str]:
    return {k: str(info[k]) for k in FINGERPRINT_KEYS if info.get(k) is not None}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    FileSpec(path, json.dumps(data, indent=2) + "\n").write()


def fetch(url: str, cache_dir: Path | None = None) -> Path:
    """The local, cached copy of the file at `url` (downloaded only when not cached or changed remotely)."""
    cache = Path(cache_dir) if cache_dir is not None else settings().cache_dir
    index = cache / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"
    known: dict[str, Any] = {}
    if index.is_file():
        try:
            known = json.loads(index.read_text(encoding="utf-8"))
        except ValueError:
            known = {}
    cached = Path(known["path"]) if known.get("path") else None
    fs, path = _filesystem(url)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise DataError("no such file", safe_url(url)) from exc
    except Exception as exc:  # network down, permissions: a cached copy still serves
        if cached is not None and cached.is_file():
            warnings.warn(f"cannot reach {safe_url(url)} ({type(exc).__name__}: {exc}); using the copy cached at "
                          f"{time.ctime(known.get('fetched', 0))}", stacklevel=2)  # fmt: skip
            return cached
        raise DataError(f"cannot read: {type(exc).__name__}: {exc}", safe_url(url)) from exc
    if info.get("type") == "directory":
        raise DataError("is a folder: pass the URL of each data file", safe_url(url))
    fingerprint = _fingerprint(info)
    if cached is not None and cached.is_file() and known.get("fingerprint") == fingerprint:
        return cached
    tmp_dir = settings().temp_dir if cache_dir is None else cache / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"fetch-{os.getpid()}-{time.time_ns()}-{url_name(url)}"
    try:
        fs.get_file(path, str(tmp))
        digest = _sha256(tmp)
        blob = cache / "data" / digest / url_name(url)
        if blob.is_file():
            tmp.unlink()
        else:
            blob.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, blob)
    except OSError as exc:
        raise DataError(f"download failed: {exc}", safe_url(url)) from exc
    except Exception as exc:
        raise DataError(f"download failed: {type(exc).__name__}: {exc}", safe_url(url)) from exc
    finally:
        tmp.unlink(missing_ok=True)
    _write_json(index, {"url": safe_url(url), "sha256": digest, "path": str(blob), "fingerprint": fingerprint,
                        "fetched": time.time()})  # fmt: skip
    return blob


def upload(folder: Path, url: str) -> str:
    """Copy every file of `folder` to `url` (same relative layout); checks the sizes after. Returns the URL."""
    folder = Path(folder)
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for file in files:
        dest = f"{root}/{file.relative_to(folder).as_posix()}"
        fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(file), dest)
    for file in files:
        dest = f"{root}/{file.relative_to(folder).as_posix()}"
        size = fs.info(dest).get("size")
        if size is not None and size != file.stat().st_size:
            raise OSError(f"{safe_url(url)}: {file.name} has {size} bytes after upload, {file.stat().st_size} here")
    return safe_url(url)


def local_target(url: str) -> Path:
    """Where a run whose target is `url` is made: `$LAZYTUNE_TRAIN_TARGET_ROOT/lazytune_url_targets/<url as name>`."""
    parts = urlsplit(safe_url(url))
    name = re.sub(r"[^\w.+-]+", "_", f"{parts.scheme}_{parts.netloc}{parts.path}").strip("_")[:80]
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    return settings().train_target_root.absolute() / "lazytune_url_targets" / f"{name}-{digest}"
