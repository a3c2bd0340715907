"""Data from fsspec URLs (memory://, a loopback HTTP server) fetched once into the content-addressed cache, and
the merged model uploaded when target_path is a URL."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import pytest

import launchers
from lazytune import finetune
from lazytune.errors import DataError
from lazytune.fetch import fetch, safe_url, url_name
from tests.test_cli import lazytune

RECORDS = [{"instruction": f"Say {i}", "input": "", "output": str(i)} for i in range(5)]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAZYTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def http_server(tmp_path: Path):
    """A loopback HTTP server over tmp_path/www that counts the GET requests per path."""
    pytest.importorskip("aiohttp", reason="fsspec's http:// driver needs aiohttp (dev extra)")
    www = tmp_path / "www"
    www.mkdir()
    gets: dict[str, int] = {}

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            gets[self.path] = gets.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, gets
    server.shutdown()
    server.server_close()


def test_memory_url_fetched_once_into_content_addressed_cache(home: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/lazytune-test/train.jsonl", b'{"text": "a"}\n')
    first = fetch("memory://lazytune-test/train.jsonl")
    assert first.name == "train.jsonl" and first.read_bytes() == b'{"text": "a"}\n'
    assert first.parent.parent == home / "cache" / "data" and len(first.parent.name) == 64  # sha256 of the bytes
    assert fetch("memory://lazytune-test/train.jsonl") == first
    fs.pipe("/lazytune-test/train.jsonl", b'{"text": "b"}\n')  # changed remotely: fetched again
    second = fetch("memory://lazytune-test/train.jsonl")
    assert second != first and second.read_bytes() == b'{"text": "b"}\n'
    fs.pipe("/lazytune-test/copy.jsonl", b'{"text": "b"}\n')
    assert fetch("memory://lazytune-test/copy.jsonl").parent == second.parent  # same bytes, same folder


def test_http_url_downloaded_once(home: Path, http_server) -> None:  # noqa: ANN001
    base, www, gets = http_server
    (www / "train.json").write_text(json.dumps(RECORDS))
    url = f"{base}/train.json?token=abc"
    path = fetch(url)
    assert json.loads(path.read_text()) == RECORDS and path.suffix == ".json"
    assert fetch(url) == path
    assert sum(gets.values()) == 1


def test_missing_url_and_unknown_protocol_say_so(home: Path, http_server) -> None:  # noqa: ANN001
    base, _, _ = http_server
    with pytest.raises(DataError, match="no such file"):
        fetch(f"{base}/nothing.json")
    with pytest.raises(DataError):
        fetch("memory://lazytune-test/absent.json")


def test_url_helpers() -> None:
    assert safe_url("https://user:secret@host/a/b.json?sig=1") == "https://host/a/b.json"
    assert url_name("s3://bucket/dir/train.jsonl?x=1") == "train.jsonl"
    assert url_name("https://host/") == "data"


def test_cli_train_with_http_data_fetches_once(tmp_path: Path, home: Path, http_server,  # noqa: ANN001
                                               tiny_folder_model: Path) -> None:
    base, www, gets = http_server
    (www / "train.json").write_text(json.dumps(RECORDS))
    args = ["train", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "--data", f"{base}/train.json",
            "-q", "--overwrite"]  # fmt: skip
    env = {"LAZYTUNE_HOME": str(home)}
    for _ in range(2):
        out = lazytune(*args, env=env)
        assert out.returncode == 0, out.stderr
    assert gets == {"/train.json": 1}
    manifest = json.loads((tmp_path / "t" / "lazytune_run.json").read_text())
    assert manifest["plan"]["data"][0].startswith(str(home / "cache" / "data"))
    missing = lazytune(*args[:-4], "--data", f"{base}/missing.json", "--overwrite", env=env)
    assert missing.returncode == 2 and "missing.json" in missing.stderr and "no such file" in missing.stderr


def test_url_target_uploads_the_merge_python(tmp_path: Path, home: Path, tiny_folder_model: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYTUNE_TRAIN_TARGET_ROOT", str(tmp_path / "root"))
    trainer = finetune.dummy(tiny_folder_model, "memory://lazytune-out/run1",
                             launcher=launchers.local(ngpus=0, stream=False))  # fmt: skip
    result = trainer()
    assert Path(result).is_dir() and Path(result).is_relative_to(tmp_path / "root" / "lazytune_url_targets")
    fs = fsspec.filesystem("memory")
    assert fs.cat("/lazytune-out/run1/lazyllm_merge/config.json") == (Path(result) / "config.json").read_bytes()
    manifest = json.loads((Path(result).parent / "lazytune_run.json").read_text())
    assert manifest["metrics"]["uploaded"] == "memory://lazytune-out/run1/lazyllm_merge"
    assert manifest["plan"]["target"]["url"] == "memory://lazytune-out/run1"


def test_url_target_uploads_the_merge_cli(tmp_path: Path, tiny_folder_model: Path) -> None:
    remote = tmp_path / "remote"
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", f"local://{remote}/run1",
                   cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"uploaded {tmp_path}/lazytune_url_targets" in out.stderr
    assert (remote / "run1" / "lazyllm_merge" / "merged_from.json").is_file()
    assert Path(out.stdout.strip()).is_relative_to(tmp_path / "lazytune_url_targets")


def test_failed_upload_fails_the_run(tmp_path: Path, tiny_folder_model: Path) -> None:
    blocker = tmp_path / "remote"
    blocker.write_text("a file where the upload needs a folder")
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", f"local://{blocker}/run1", "-q",
                   cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "upload of" in out.stderr and "Traceback" not in out.stderr
