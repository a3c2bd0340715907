"""The README's benchmark command keeps working (a tiny run: 1 MB files, one repeat, no LazyLLM, no end-to-end)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_runner_smoke(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "benchmarks.run", "--sizes", "1MB", "--repeats", "1", "--no-lazyllm", "--no-e2e",
            "--data-dir", str(tmp_path / "data"), "--results", str(tmp_path / "results")]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| 1MB | jsonl |" in proc.stdout and "| 1MB | json |" in proc.stdout
    (result,) = (tmp_path / "results").glob("benchmarks-*.json")
    rows = json.loads(result.read_text())["overhead"]["rows"]
    for row in rows:
        for what in ("sniff", "validate", "plan"):
            assert row[what]["runs"] == 1 and row[what]["median_s"] > 0, row
        assert row["plan"]["validated_every_record"] is True
    assert not (tmp_path / "data").exists(), "generated data is deleted afterwards"
