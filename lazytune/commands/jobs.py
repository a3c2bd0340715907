"""`lazytune jobs`: the runs under the targets root, from their manifests (Python: `lazytune.runs.find_runs()`)."""

from __future__ import annotations

import argparse
import json
import time

from lazytune.evaluate import brief, latest_eval
from lazytune.runs import find_runs

HELP = "list runs (state, progress, loss) from the manifests under the targets root"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "jobs", help=HELP,
        description="List the runs whose manifests (TARGET/lazytune_runs/RUN/lazytune_run.json) are under --root "
                    "(default LAZYTUNE_TRAIN_TARGET_ROOT, else the current folder), oldest first. A run that says "
                    "RUNNING but whose controlling process is gone shows as LOST.\n"
                    "Python: lazytune.runs.find_runs(root)",
    )  # fmt: skip
    parser.add_argument("--root", metavar="DIR", help="where to look (searched 4 folders deep)")
    parser.add_argument("--running", action="store_true", help="only runs that have not finished")
    parser.add_argument("-n", "--last", type=int, metavar="N", help="only the N most recent runs")
    parser.add_argument("--json", action="store_true", help="the manifests as a JSON list")
    return parser


def _progress(p: dict) -> str:
    if p.get("step") is None:
        return "-"
    return f"{p['step']}/{p['total_steps']}" if p.get("total_steps") else str(p["step"])


def run(args: argparse.Namespace) -> int:
    records = find_runs(args.root)
    if args.running:
        records = [r for r in records if not r.finished]
    if args.last is not None:
        records = records[-args.last:] if args.last > 0 else []
    if args.json:
        print(json.dumps([{**r.data, "state": r.state, "manifest": str(r.path), "latest_eval": latest_eval(r.target)}
                          for r in records], indent=2))  # fmt: skip
        return 0
    rows = [("RUN", "BACKEND", "STATE", "STEP", "LOSS", "EVAL", "STARTED", "TARGET")]
    evals: dict = {}  # target -> its latest `lazytune eval` (shown on the run it evaluated)
    for r in records:
        p = r.progress()
        loss = p.get("final_loss")
        started = r.data.get("started")
        if r.target not in evals:
            evals[r.target] = latest_eval(r.target)
        report = evals[r.target]
        shown = brief(report) if report and report.get("run_id") == r.run_id else "-"
        rows.append((
            r.run_id, r.backend, r.state, _progress(p), f"{loss:.4g}" if isinstance(loss, (int, float)) else "-", shown,
            time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if started else "-", str(r.target),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0
