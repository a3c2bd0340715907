"""`lazytune cancel <run>`: stop a run and every process it started (Python: `lazytune.runs.find_run(run).cancel()`)."""

from __future__ import annotations

import argparse

from lazytune.runs import find_run

from .logs import RUN_HELP

HELP = "stop a run and all its processes (local process tree, or scancel for SLURM)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cancel", help=HELP,
        description="Cancel a run. Local runs: the `lazytune train` that controls it is asked to cancel (SIGTERM), "
                    "which stops the whole process tree of the running step; a run started from Python has its step "
                    "processes stopped. SLURM runs: scancel of the job id. The manifest then says CANCELLED. "
                    "Must run on the host that started a local run.\n"
                    "Python: lazytune.runs.find_run(RUN).cancel()",
    )  # fmt: skip
    parser.add_argument("run", metavar="RUN", help=RUN_HELP)
    parser.add_argument("--root", metavar="DIR", help="where to look for run ids (default LAZYTUNE_TRAIN_TARGET_ROOT)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the run to stop (default 30)")  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    print(find_run(args.run, args.root).cancel(timeout=args.timeout))
    return 0
