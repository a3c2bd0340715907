"""End-to-end parity: the same tiny LoRA SFT through lazytune and through `llamafactory-cli train` + `export` by hand.

    python -m benchmarks.e2e_llamafactory [--runs 5] [--out result.json]

Both sides run the same YAML files (lazytune writes them; by hand they are given to `llamafactory-cli` of the
llamafactory environment with the same environment variables), alternating which goes first. Each side is timed
as a user would see it: from starting a process to having the merged model (lazytune: `python -c "...finetune
.llamafactory(...)(data)"`, imports, checks, manifest and loss plot included). Reports medians, their ratio, and
lazytune's own time per run (wall time less the steps' time recorded in the run manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .datagen import record

REPO = Path(__file__).resolve().parent.parent
OPTIONS = dict(num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
               learning_rate=1e-3, cutoff_len=64, lora_rank=8)  # fmt: skip
LAZYTUNE_RUN = """
import json, sys
from lazytune import finetune, launchers
model, target, data, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print(finetune.llamafactory(model, target, launcher=launchers.local(stream=False), **options)(data))
"""


def load() -> float:
    return round(os.getloadavg()[0], 2)


def tiny_qwen(python: str, root: Path) -> Path:
    from lazytune.backends.base import script

    out = root / "Qwen2.5-tiny"  # the folder name gives the qwen template; its tokenizer has the ChatML tokens
    argv = [python, script("make_tiny_model.py"), "--out", str(out), "--arch", "qwen2", "--hidden", "64", "--layers",
            "2", "--vocab", "512"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600)
    return out


def timed(argvs: list[list[str]], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "ab") as f:
        for argv in argvs:
            proc = subprocess.run(argv, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
            if proc.returncode != 0:
                raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def by_hand(model: Path, data: Path, target: Path, cli: str) -> float:
    """`llamafactory-cli train` + `export` on the YAML files lazytune writes (written beforehand, not timed)."""
    from lazytune import finetune

    plan = finetune.llamafactory(model, target, **OPTIONS).plan(data)
    plan.write_files()
    env = {**os.environ, **plan.steps[0].env}
    argvs = [[cli, "train", str(plan.run_dir / "train.yaml")], [cli, "export", str(plan.run_dir / "export.yaml")]]
    seconds = timed(argvs, env, plan.run_dir / "by-hand.log")
    if not (target / "lazyllm_merge" / "config.json").is_file():
        raise RuntimeError(f"by hand: no merged model in {target / 'lazyllm_merge'}")
    return seconds


def own_seconds(target: Path, wall: float) -> float:
    """lazytune's own time in a run: the wall time less its steps' time (LLaMA-Factory itself), per the manifest.

    Independent of how fast LLaMA-Factory happened to run this time, so far less noisy than a difference of walls.
    """
    manifest = json.loads((target / "lazytune_run.json").read_text())
    return wall - sum(s["seconds"] for s in manifest["job"]["steps"])


def through_lazytune(model: Path, data: Path, target: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAZYTUNE_QUIET": "1", "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-c", LAZYTUNE_RUN, str(model), str(target), str(data), json.dumps(OPTIONS)]
    seconds = timed([argv], env, target.parent / f"{target.name}.log")
    if not (target / "lazyllm_merge" / "config.json").is_file():
        raise RuntimeError(f"lazytune: no merged model in {target / 'lazyllm_merge'}")
    return seconds


def run(runs: int, keep: bool = False) -> dict[str, Any]:
    from lazytune import envs

    if envs.read_stamp("llamafactory") is None and not os.environ.get(envs.python_variable("llamafactory")):
        return {"skipped": "the llamafactory environment is not installed (lazytune env install llamafactory)"}
    python = envs.python_for("llamafactory")
    cli = str(Path(python).parent / "llamafactory-cli")
    work = Path(tempfile.mkdtemp(prefix="lazytune-e2e-"))
    print(f"end-to-end parity in {work}", flush=True)
    try:
        model = tiny_qwen(python, work)
        data = work / "alpaca.json"
        data.write_text(json.dumps([record(i) for i in range(64)], ensure_ascii=False))
        times: dict[str, list[float]] = {"lazytune": [], "by_hand": []}
        own: list[float] = []
        loads = []
        for i in range(runs):
            order = ("by_hand", "lazytune") if i % 2 == 0 else ("lazytune", "by_hand")
            for side in order:
                target = work / f"{side}-{i}"
                before = load()
                s = through_lazytune(model, data, target) if side == "lazytune" else by_hand(model, data, target, cli)
                times[side].append(round(s, 3))
                if side == "lazytune":
                    own.append(round(own_seconds(target, s), 3))
                loads.append([before, load()])
                print(f"  run {i + 1}/{runs} {side:9} {s:6.2f} s  (load {before} -> {load()})", flush=True)
                if not keep:
                    shutil.rmtree(target, ignore_errors=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        return {
            "runs": runs,
            "seconds": times,
            "median_s": med,
            "ratio_of_medians": round(med["lazytune"] / med["by_hand"], 3),
            "lazytune_own_s": own,
            "lazytune_own_median_s": statistics.median(own),
            "options": OPTIONS,
            "model": "tiny Qwen2 (hidden 64, 2 layers, vocab 512)",
            "records": 64,
            "load": loads,
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (models, runs, logs)")
    args = ap.parse_args(argv)
    result = run(args.runs, args.keep)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
