"""lazytune benchmarks, one command: `python -m benchmarks.run [--sizes 10MB,200MB,2GB] [--quick]`.

1. Adapter overhead: dataset_info.json for generated alpaca files (JSON lines and one JSON array; 2 GB: the array)
   each measurement in a fresh process (time of the call, peak memory):
     sniff    lazytune's dataset_info from the head of the file (what a plan does for files >= 512 MB)
     validate the same plus a check of every record (the default below 512 MB)
     plan     the whole `finetune.llamafactory(...).plan()` + writing its files (default validation policy)
     lazyllm  LazyLLM's own builder (`LlamafactoryFinetune._build_temp_dataset_info`), run in benchmarks/.venv-lazyllm
              (created on demand with `pip install lazyllm==1.4.0`)
2. End-to-end parity: the same tiny LoRA SFT through lazytune and through `llamafactory-cli train` + `export` by
   hand, several runs each; ratio of medians, lazytune's own time, identical outputs (benchmarks/bench_llamafactory.py,
   owned by the llamafactory backend, run from here).
3. GPU: recorded as skipped unless `nvidia-smi` sees a GPU.

Results: benchmarks/results/<section>-<time>.json and a short table on stdout. Medians of several runs (fewer for
big files); the load average is recorded before and after each measurement because other work on the machine
slows it down. Generated files go to a temporary folder and are deleted at the end (--keep-data keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lazytune.backends.llamafactory.dataset_info import VALIDATE_BELOW

from .datagen import generate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
LAZYLLM_VENV = HERE / ".venv-lazyllm"
LAZYLLM_REQUIREMENT = "lazyllm==1.4.0"
UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
LAZYLLM_MEMORY_LIMIT = 16 << 30  # address-space cap for LazyLLM's json.load of a whole file


def parse_size(text: str) -> int:
    text = text.strip().upper()
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def repeats_for(size: int, forced: int | None) -> int:
    if forced:
        return forced
    return 5 if size <= 32 << 20 else 3 if size <= 512 << 20 else 1


def load() -> float:
    return round(os.getloadavg()[0], 2)


def lazyllm_python() -> tuple[str | None, str | None]:
    """(python of the LazyLLM venv, None) or (None, why it is not available). Creates the venv on first use."""
    python = LAZYLLM_VENV / "bin" / "python"
    if not python.is_file():
        print(f"creating {LAZYLLM_VENV} ({LAZYLLM_REQUIREMENT}) ...", flush=True)
        steps = [[sys.executable, "-m", "venv", str(LAZYLLM_VENV)],
                 [str(python), "-m", "pip", "install", "-q", LAZYLLM_REQUIREMENT]]  # fmt: skip
        for argv in steps:
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                shutil.rmtree(LAZYLLM_VENV, ignore_errors=True)
                return None, f"{' '.join(argv[-3:])} failed: {proc.stderr.strip()[-500:]}"
    code = "from lazyllm.components.finetune.llamafactory import LlamafactoryFinetune as F; F._build_temp_dataset_info"
    probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"lazyllm does not import: {probe.stderr.strip()[-500:]}"
    return str(python), None


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LAZYLLM_MEMORY_LIMIT, LAZYLLM_MEMORY_LIMIT))


def measure_once(what: str, data: Path, work: Path, lazyllm: str | None) -> dict[str, Any]:
    """One measurement in a fresh process; its JSON line plus the load average around it."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if what == "lazyllm":
        argv, limit = [str(lazyllm), str(HERE / "lazyllm_dataset_info.py"), str(data), str(work)], _limit_memory
    else:
        argv, limit = [sys.executable, "-m", "benchmarks.measure", what, str(data), str(work)], None
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAZYTUNE_QUIET": "1", "PYTHONWARNINGS": "ignore"}
    before = load()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=work, env=env, preexec_fn=limit)
    after = load()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {
            "error": (proc.stderr.strip() or proc.stdout.strip())[-800:],
            "load_before": before,
            "load_after": after,
        }
    out = json.loads(lines[-1])
    out.update(load_before=before, load_after=after)
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if not r.get("error")]
    if not ok:
        return {"runs": len(runs), "error": runs[-1].get("error") if runs else "no run"}
    return {
        "runs": len(ok),
        "median_s": round(statistics.median(r["seconds"] for r in ok), 4),
        "min_s": round(min(r["seconds"] for r in ok), 4),
        "max_s": round(max(r["seconds"] for r in ok), 4),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
        "delta_rss_mb": max(r["delta_rss_mb"] for r in ok),
        "load": [min(r["load_before"] for r in ok), max(r["load_after"] for r in ok)],
    }


def overhead(sizes: list[int], data_dir: Path, repeats: int | None, with_lazyllm: bool) -> dict[str, Any]:
    lazyllm, why = lazyllm_python() if with_lazyllm else (None, "--no-lazyllm")
    if why:
        print(f"LazyLLM comparison skipped: {why}", flush=True)
    rows = []
    for size in sizes:
        for fmt in ("jsonl", "json") if size < 1 << 30 else ("json",):  # 2 GB: the array LazyLLM can read
            # LazyLLM's sft path is json.load of the whole file: on JSON lines it fails, warns and writes an entry
            # without columns. Measured once (smallest size) to show that; compared on JSON arrays.
            compare = lazyllm is not None and (fmt == "json" or size == sizes[0])
            whats = ["sniff", "validate", "plan"] + (["lazyllm"] if compare else [])
            label = f"{size >> 20}MB" if size < 1 << 30 else f"{size / (1 << 30):g}GB"
            started = time.perf_counter()
            data = generate(data_dir / f"alpaca-{label}.{fmt}", fmt, size)
            gen_s = time.perf_counter() - started
            row: dict[str, Any] = {"size": label, "bytes": data.stat().st_size, "format": fmt,
                                   "generate_s": round(gen_s, 1)}  # fmt: skip
            runs: dict[str, list[dict[str, Any]]] = {what: [] for what in whats}
            for _ in range(repeats_for(size, repeats)):  # round-robin: a change in machine load hits every method
                for what in whats:
                    runs[what].append(measure_once(what, data, data_dir / f"work-{what}", lazyllm))
            for what in whats:
                row[what] = summarize(runs[what])
                if what == "lazyllm" and "error" not in row[what]:  # LazyLLM warns and goes on when it can't parse
                    info = runs[what][-1].get("dataset_info") or {}
                    row[what]["columns_detected"] = any("columns" in v for v in info.values())
                if what == "plan" and "error" not in row[what]:
                    row[what]["validated_every_record"] = size < VALIDATE_BELOW
                print(f"  {label:>6} {fmt:5} {what:8} {fmt_cell(row[what])}", flush=True)
            rows.append(row)
            if size >= 1 << 30:
                data.unlink(missing_ok=True)  # big files are not kept between formats
    return {"rows": rows, "lazyllm": LAZYLLM_REQUIREMENT if lazyllm else None, "lazyllm_skipped": why}


def fmt_cell(cell: dict[str, Any]) -> str:
    if "error" in cell:
        return "error: " + str(cell["error"]).splitlines()[-1][:60]
    low, high = cell["load"]
    return f"{cell['median_s']:.3f} s  {cell['peak_rss_mb']:.0f} MB (n={cell['runs']}, load {low}-{high})"


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    if "error" in a or "error" in b or not b.get(key):
        return "-"
    return f"{a[key] / b[key]:.2f}"


def table(result: dict[str, Any]) -> str:
    head = ("size", "fmt", "sniff s", "validate s", "plan s", "lazyllm s", "validate/lazyllm", "peak MB lt/ll")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        ll = r.get("lazyllm", {"error": "not measured"})

        def s(c: dict[str, Any]) -> str:
            return ("-" if c.get("error") == "not measured" else "err") if "error" in c else f"{c['median_s']:.3f}"

        mem = f"{r['validate'].get('peak_rss_mb', '-')}/{ll.get('peak_rss_mb', '-')}"
        lines.append(f"| {r['size']} | {r['format']} | {s(r['sniff'])} | {s(r['validate'])} | {s(r['plan'])} | "
                     f"{s(ll)} | {ratio(r['validate'], ll, 'median_s')} | {mem} |")  # fmt: skip
    return "\n".join(lines)


def flat(result: dict[str, Any]) -> dict[str, Any]:
    """Is the sniff (head-only) time flat in file size? Smallest vs largest file, per format."""
    out = {}
    for fmt in ("jsonl", "json"):
        cells = [r["sniff"] for r in result["rows"] if r["format"] == fmt and "error" not in r["sniff"]]
        if len(cells) >= 2:
            out[fmt] = {"smallest_s": cells[0]["median_s"], "largest_s": cells[-1]["median_s"],
                        "peak_mb": [cells[0]["peak_rss_mb"], cells[-1]["peak_rss_mb"]]}  # fmt: skip
    return out


def e2e(runs: int) -> dict[str, Any]:
    """LLaMA-Factory parity, measured by the llamafactory backend's own benchmarks/bench_llamafactory.py:
    `overhead` (lazytune vs `llamafactory-cli train` + `export` by hand on the same YAML, output files compared by
    hash) and `imports`. Adds lazytune's own time per run: its wall time less its steps' time (from the manifest)."""
    script = HERE / "bench_llamafactory.py"
    if not script.is_file():
        return {"skipped": f"{script.name} is not in this checkout"}
    print(f"end-to-end parity: {script.name} overhead --runs {runs} (tiny LoRA SFT, lazytune vs by hand)", flush=True)
    out: dict[str, Any] = {"load": [load()]}
    for argv in (["overhead", "--runs", str(runs)], ["imports"]):
        proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, cwd=REPO)
        lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0:
            return {"error": f"{script.name} {argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-800:]}"}
        out[argv[0]] = lines
    out["load"].append(load())
    runs_ = [r for r in out["overhead"] if r.get("what") == "run"]
    summary = next((r for r in out["overhead"] if r.get("what") == "overhead"), {})
    own = [round(r["lazytune_s"] - sum(r["lazytune_steps_s"].values()), 3) for r in runs_]
    out.update(
        runs=len(runs_),
        median_s={"lazytune": summary.get("lazytune_median_s"), "by_hand": summary.get("by_hand_median_s")},
        ratio_of_medians=summary.get("ratio"),
        lazytune_own_s=own,
        lazytune_own_median_s=statistics.median(own) if own else None,
        identical_files=[r.get("identical_files") for r in runs_],
    )
    return out


def gpu() -> dict[str, Any]:
    if shutil.which("nvidia-smi") is None:
        return {"skipped": "no GPU on this machine (no nvidia-smi): the GPU LoRA benchmark runs only on a lent GPU"}
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return {"skipped": "GPU present but the GPU benchmark is not part of this runner yet", "gpus": proc.stdout}


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "loadavg_start": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10MB,200MB,2GB", help="generated file sizes (default 10MB,200MB,2GB)")
    ap.add_argument("--quick", action="store_true", help="10MB only, no end-to-end runs (smoke test, ~1 min)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 5 / 3 / 1 by size)")
    ap.add_argument("--no-lazyllm", action="store_true", help="skip the LazyLLM side-by-side")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end LLaMA-Factory parity runs")
    ap.add_argument("--e2e-runs", type=int, default=3, help="end-to-end runs per side (default 3)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where generated files go (default: a temp folder)")
    ap.add_argument("--keep-data", action="store_true", help="keep the generated files")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the JSON results go (benchmarks/results)")
    args = ap.parse_args(argv)
    sizes = [10 << 20] if args.quick else [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="lazytune-bench-"))
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": machine()}
    try:
        print(f"adapter overhead ({', '.join(f'{s >> 20} MB' for s in sizes)}; data in {data_dir})", flush=True)
        report["overhead"] = overhead(sizes, data_dir, args.repeats, not args.no_lazyllm)
        report["overhead"]["sniff_flat"] = flat(report["overhead"])
        report["e2e"] = {"skipped": "--quick / --no-e2e"} if args.quick or args.no_e2e else e2e(args.e2e_runs)
        report["gpu"] = gpu()
    finally:
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = args.results / f"benchmarks-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + table(report["overhead"]))
    print(f"\nsniff flat in size: {json.dumps(report['overhead']['sniff_flat'])}")
    parity = report["e2e"]
    if "ratio_of_medians" in parity:
        med = parity["median_s"]
        print(
            f"\nend-to-end (n={parity['runs']} each): lazytune {med['lazytune']:.2f} s, "
            f"by hand {med['by_hand']:.2f} s, ratio of medians {parity['ratio_of_medians']:.3f}; lazytune's own time "
            f"(wall less LLaMA-Factory's steps) {parity['lazytune_own_median_s']:.2f} s; identical adapter/merged "
            f"files: {parity['identical_files']}"
        )
    for key in ("e2e", "gpu"):
        if "skipped" in report[key] or "error" in report[key]:
            print(f"{key}: {report[key].get('skipped') or report[key].get('error')}")
    print(f"\nwrote {out} ({report['seconds']} s; load average {report['machine']['loadavg_start'][0]:.2f} -> "
          f"{report['machine']['loadavg_end'][0]:.2f} on {report['machine']['cpus']} CPUs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
