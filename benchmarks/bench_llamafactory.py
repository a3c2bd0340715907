"""Benchmarks of finetune.llamafactory (not tests). Needs the llamafactory environment.

    python benchmarks/bench_llamafactory.py plan [--gb 2]      # plan + dataset_info.json on a generated big JSONL
    python benchmarks/bench_llamafactory.py overhead [--runs 3] # lazytune vs `llamafactory-cli` by hand, same YAML
    python benchmarks/bench_llamafactory.py imports             # import costs paid per call

`plan` writes the file under $TMPDIR, samples this process's RSS while planning (memory must stay flat: the file
is streamed, never loaded) and deletes the file afterwards. `overhead` alternates a lazytune call and the same two
commands by hand (train then export, the YAML files lazytune wrote, fresh output folders) and reports the ratio of
the medians. Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import launchers  # noqa: E402
from lazytune import finetune  # noqa: E402
from lazytune.backends.base import backend_python, script  # noqa: E402

FAST = dict(num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
            learning_rate=1e-3, cutoff_len=64)  # fmt: skip


def report(**data) -> None:
    data["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(data), flush=True)


def tiny_model(root: Path) -> Path:
    folder = root / "Qwen2.5-tiny-bench"
    if not (folder / "tiny_model.json").is_file():
        subprocess.run([backend_python("llamafactory"), script("make_tiny_model.py"), "--out", str(folder),
                        "--arch", "qwen2"], check=True, capture_output=True)  # fmt: skip
    return folder


class PeakRss:
    """Samples this process's resident memory every 20 ms in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_big_jsonl(path: Path, gigabytes: float) -> int:
    """Alpaca JSON lines up to `gigabytes`; returns the record count."""
    target = int(gigabytes * (1 << 30))
    filler = "lorem ipsum dolor sit amet " * 20
    n = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as f:
        while f.tell() < target:
            lines = []
            for _ in range(10000):
                lines.append(json.dumps({"instruction": f"Summarize item {n}", "input": filler, "output": f"item {n}"}))
                n += 1
            f.write("\n".join(lines) + "\n")
    return n


def bench_plan(gigabytes: float) -> None:
    with tempfile.TemporaryDirectory(prefix="lazytune-bench-") as tmp:
        root = Path(tmp)
        model = root / "Qwen2.5-plan-only"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "qwen2"}')
        big = root / "big.jsonl"
        t0 = time.perf_counter()
        records = write_big_jsonl(big, gigabytes)
        report(what="generate", bytes=big.stat().st_size, records=records, seconds=round(time.perf_counter() - t0, 1))
        for validate in (None, True):
            trainer = finetune.llamafactory(model, root / "target", launcher=launchers.local(ngpus=0),
                                            validate_data=validate)  # fmt: skip
            with PeakRss() as rss:
                t0 = time.perf_counter()
                plan = trainer.plan(big)
                seconds = time.perf_counter() - t0
            info = next(f for f in plan.files if f.path.name == "dataset_info.json")
            report(
                what="plan",
                validate_data=validate if validate is not None else "default (head only above 512 MB)",
                seconds=round(seconds, 3),
                rss_start_mb=round(rss.start / 2**20, 1),
                rss_peak_mb=round(rss.peak / 2**20, 1),
                rss_growth_mb=round((rss.peak - rss.start) / 2**20, 1),
                gb_per_s=round(big.stat().st_size / 2**30 / seconds, 2),
                dataset_info_bytes=len(info.content),
            )
        big.unlink()


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def by_hand(run_dir: Path, out: Path) -> float:
    """`llamafactory-cli train` + `export` with lazytune's YAML files, outputs redirected to `out`."""
    cli = str(Path(backend_python("llamafactory")).parent / "llamafactory-cli")
    train = yaml.safe_load((run_dir / "train.yaml").read_text())
    export = yaml.safe_load((run_dir / "export.yaml").read_text())
    train["output_dir"] = export["adapter_name_or_path"] = str(out / "lora")
    export["export_dir"] = str(out / "merge")
    out.mkdir(parents=True)
    (out / "train.yaml").write_text(yaml.safe_dump(train, sort_keys=False))
    (out / "export.yaml").write_text(yaml.safe_dump(export, sort_keys=False))
    t0 = time.perf_counter()
    with open(out / "log.txt", "wb") as log:
        for verb in ("train", "export"):
            subprocess.run([cli, verb, str(out / f"{verb}.yaml")], check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def bench_overhead(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lazytune-bench-") as tmp:
        root = Path(tmp)
        model = tiny_model(root)
        data = root / "alpaca.json"
        data.write_text(json.dumps([{"instruction": f"Repeat {i}", "input": "", "output": f"{i} {i}"}
                                    for i in range(32)]))  # fmt: skip
        ours, theirs = [], []
        for i in range(runs):
            target = root / f"lazytune-{i}"
            trainer = finetune.llamafactory(model, target, launcher=launchers.local(stream=False), **FAST)
            t0 = time.perf_counter()
            trainer(data)
            ours.append(time.perf_counter() - t0)
            manifest = json.loads((target / "lazytune_run.json").read_text())
            steps = {s["name"]: s["seconds"] for s in manifest["job"]["steps"]}
            hand = root / f"by-hand-{i}"
            theirs.append(by_hand(Path(manifest["plan"]["run_dir"]), hand))
            hand_log = [json.loads(x) for x in (hand / "lora" / "trainer_log.jsonl").read_text().splitlines()]
            same = {
                "adapter": sha256(target / "lazyllm_lora/adapter_model.safetensors")
                == sha256(hand / "lora/adapter_model.safetensors"),
                "merged": sha256(target / "lazyllm_merge/model.safetensors")
                == sha256(hand / "merge/model.safetensors"),
            }
            report(
                what="run",
                i=i,
                lazytune_s=round(ours[-1], 2),
                lazytune_steps_s=steps,
                by_hand_s=round(theirs[-1], 2),
                final_loss=manifest["metrics"].get("final_loss"),
                by_hand_final_loss=[e["loss"] for e in hand_log if "loss" in e][-1],
                identical_files=same,
            )
        m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
        report(
            what="overhead",
            runs=runs,
            lazytune_median_s=round(m_ours, 2),
            by_hand_median_s=round(m_theirs, 2),
            ratio=round(m_ours / m_theirs, 3),
        )


def bench_imports() -> None:
    def wall(argv: list[str], n: int = 3) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times), 3)

    lf = backend_python("llamafactory")
    report(what="import", module="lazytune (controller side)", seconds=wall([sys.executable, "-c", "import lazytune"]))
    report(what="import", module="python (bare interpreter)", seconds=wall([sys.executable, "-c", "pass"]))
    report(what="import", module="llamafactory.train.tuner (paid by each train/export step)",
           seconds=wall([lf, "-c", "import llamafactory.train.tuner"]))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lazytune-bench-") as tmp:
        root = Path(tmp)
        model = root / "Qwen2.5-x"
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "qwen2"}')
        data = root / "a.json"
        data.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}] * 100))
        t0 = time.perf_counter()
        n = 20
        for _ in range(n):
            finetune.llamafactory(model, root / "t", launcher=launchers.local(ngpus=0)).plan(data)
        report(what="construct+plan in process", seconds=round((time.perf_counter() - t0) / n, 4))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--gb", type=float, default=2.0)
    p = sub.add_parser("overhead")
    p.add_argument("--runs", type=int, default=3)
    sub.add_parser("imports")
    args = ap.parse_args()
    if args.what == "plan":
        bench_plan(args.gb)
    elif args.what == "overhead":
        bench_overhead(args.runs)
    else:
        bench_imports()
    return 0


if __name__ == "__main__":
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    sys.exit(main())
