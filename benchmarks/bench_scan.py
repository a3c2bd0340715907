"""The whole-file data scan that decides a LLaMA-Factory dataset entry, side by side with a bare stdlib loop.

    python -m benchmarks.bench_scan [--sizes 10MB,200MB] [--gb] [--formats jsonl,json] [--repeats 3] [--keep-data]

For generated alpaca files (JSON lines and one JSON array) each measurement runs in a fresh process:
  scan     lazytune.datascan.scan without its cache (msgspec, streaming, every record checked)
  stdlib   the bare stdlib parse of the same file: `json.loads` per line for JSON lines, `json.loads` of the whole
           file for a JSON array (no checks at all; the array is held in memory whole)
  cached   datascan.scan of the unchanged file once its scan is cached (what re-planning costs)
MB/s from wall time and from CPU time (the CPU figure is the steadier one on a shared machine), peak RSS of the
process. `--gb` adds a 2 GB file of each format. Results: benchmarks/results/scan-<time>.json and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .datagen import generate
from .run import parse_size

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
what, path = sys.argv[1], Path(sys.argv[2])
if what != "stdlib":
    from lazytune import datascan  # imports are not part of the measurement
t0, c0 = time.perf_counter(), time.process_time()
if what == "stdlib":
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            n = sum(1 for line in f if line.strip() and json.loads(line) is not None)
    else:
        n = len(json.loads(path.read_bytes()))
else:
    n = datascan.scan(path, use_cache=(what == "cached")).records
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"records": n, "wall": wall, "cpu": cpu, "rss": rss}))
"""


def measure(what: str, path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(path)], capture_output=True, text=True, env=env,
                         check=True, cwd=HERE.parent)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10MB,200MB")
    ap.add_argument("--gb", action="store_true", help="also a 2 GB file of each format")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="jsonl,json", help="jsonl, json or both (a 2 GB JSON array makes the "
                    "stdlib side hold ~10 GB)")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s] + ([2 << 30] if args.gb else [])
    work = args.data_dir or Path(tempfile.mkdtemp(prefix="lazytune-bench-scan-"))
    home = Path(tempfile.mkdtemp(prefix="lazytune-bench-home-"))
    os.environ["LAZYTUNE_HOME"] = str(home)  # the scan cache of this run only
    rows = []
    try:
        for size in sizes:
            for fmt in args.formats.split(","):
                path = generate(work / f"alpaca-{size >> 20}MB.{fmt}", fmt, size)
                mb = path.stat().st_size / (1 << 20)
                runs: dict[str, list[dict]] = {"scan": [], "stdlib": [], "cached": []}
                repeats = 1 if size >= 1 << 30 else args.repeats
                for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits both
                    runs["stdlib"].append(measure("stdlib", path))
                    runs["scan"].append(measure("scan", path))
                measure("cached", path)  # writes the cache
                runs["cached"] = [measure("cached", path) for _ in range(3)]
                row = {"file": f"{mb:,.0f} MB {'JSON lines' if fmt == 'jsonl' else 'JSON array'}", "mb": mb,
                       "load": os.getloadavg()[0]}  # fmt: skip
                for what, rs in runs.items():
                    row[what] = {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu", "rss")}
                row["ratio_wall"] = row["stdlib"]["wall"] / row["scan"]["wall"]
                row["ratio_cpu"] = row["stdlib"]["cpu"] / row["scan"]["cpu"]
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not args.keep_data and not args.data_dir:
                    path.unlink()
    finally:
        if not args.keep_data and not args.data_dir:
            for p in work.glob("*"):
                p.unlink()
            work.rmdir()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scan-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=1))
    print(table(rows))
    print(f"\n{out}")
    return 0


def table(rows: list[dict]) -> str:
    lines = ["| file | scan MB/s (wall / CPU) | stdlib MB/s (wall / CPU) | speed-up (wall / CPU) | re-plan (cached) | "
             "peak RSS scan / stdlib |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        mb = r["mb"]
        s, b, c = r["scan"], r["stdlib"], r["cached"]
        lines.append(
            f"| {r['file']} | {mb / s['wall']:.0f} / {mb / s['cpu']:.0f} | {mb / b['wall']:.0f} / {mb / b['cpu']:.0f} "
            f"| {r['ratio_wall']:.2f}× / {r['ratio_cpu']:.2f}× | {c['wall'] * 1000:.0f} ms | "
            f"{s['rss'] / (1 << 20):.0f} MB / {b['rss'] / (1 << 20):.0f} MB |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
