"""`lazytune logs <run>`: a run's step logs, optionally followed (Python: `lazytune.runs.find_run(run).logs()`)."""

from __future__ import annotations

import argparse
import sys
import time

from launchers.secrets import redact
from lazytune.run import Run
from lazytune.runs import find_run

HELP = "print (or follow with -f) the logs of a run"
RUN_HELP = "run id (or a unique prefix), target folder (its latest run), run folder or manifest path"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "logs", help=HELP,
        description="Print the logs of a run's steps (train, merge, ...) with secrets masked.\n"
                    "Python: print(lazytune.runs.find_run(RUN).logs())",
    )  # fmt: skip
    parser.add_argument("run", metavar="RUN", help=RUN_HELP)
    parser.add_argument("--root", metavar="DIR", help="where to look for run ids (default LAZYTUNE_TRAIN_TARGET_ROOT)")
    parser.add_argument("--step", metavar="NAME", help="only this step's log")
    parser.add_argument("-n", "--tail", type=int, metavar="N", help="only the last N lines of each log")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    return parser


def follow(record: Run, step: str | None, from_end: bool = False, interval: float = 0.5) -> None:
    """Print each log's new bytes as they come, until the run has finished and everything was printed.

    `from_end`: skip what the logs already hold (it was printed with --tail)."""
    offsets = {name: path.stat().st_size for name, path in record.log_paths(step) if from_end and path.exists()}
    while True:
        done = record.reload().finished
        for name, path in record.log_paths(step):
            try:
                with open(path, "rb") as f:
                    f.seek(offsets.get(name, 0))
                    data = f.read()
                    offsets[name] = f.tell()
            except OSError:
                continue
            if data:
                sys.stdout.write(redact(data.decode("utf-8", "replace")))
                sys.stdout.flush()
        if done:
            return
        time.sleep(interval)


def run(args: argparse.Namespace) -> int:
    record = find_run(args.run, args.root)
    if args.follow:
        if args.tail is not None:
            sys.stdout.write(record.logs(args.step, args.tail))
        follow(record, args.step, from_end=args.tail is not None)
    else:
        sys.stdout.write(record.logs(args.step, args.tail))
    return 0
