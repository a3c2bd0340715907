"""Dummy "training": reads the data, writes an adapter folder and a LLaMA-Factory-style trainer_log.jsonl.

Real process, no ML dependency: lets CI exercise the whole pipeline (launcher, logs, progress, manifest).
"""

import argparse
import json
import sys
import time
from pathlib import Path


def count_records(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(1).lstrip()
        f.seek(0)
        if head == b"[":
            return len(json.load(f))
        return sum(1 for line in f if line.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", nargs="*", default=[])
    ap.add_argument("--output", required=True)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps-per-epoch", type=int, default=3)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--fail", action="store_true", help="exit 3 halfway (for tests of failure handling)")
    args = ap.parse_args()

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    records = {p: count_records(Path(p)) for p in args.data}
    print(f"dummy train: {sum(records.values())} records from {len(records)} file(s)", flush=True)
    total = args.epochs * args.steps_per_epoch
    log = out / "trainer_log.jsonl"
    start = time.time()
    with open(log, "w") as f:
        for step in range(1, total + 1):
            if args.fail and step > total // 2:
                print(f"dummy train: failing on purpose at step {step}", file=sys.stderr, flush=True)
                return 3
            time.sleep(args.sleep)
            loss = round(2.0 / step, 4)
            elapsed = time.time() - start
            entry = {
                "current_steps": step, "total_steps": total, "loss": loss, "lr": args.learning_rate,
                "epoch": round(step / args.steps_per_epoch, 2), "percentage": round(100 * step / total, 2),
                "elapsed_time": round(elapsed, 2), "remaining_time": round(elapsed / step * (total - step), 2),
            }  # fmt: skip
            f.write(json.dumps(entry) + "\n")
            f.flush()
            print(f"step {step}/{total} loss={loss}", flush=True)
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "DUMMY", "records": records}, indent=2))
    print("dummy train: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
