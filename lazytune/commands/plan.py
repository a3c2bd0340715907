"""`lazytune plan`: print the files a run would write and the argv it would run; runs nothing (Python: `.plan()`)."""

from __future__ import annotations

import argparse
import json

from ._common import OPTIONS_HELP, add_run_arguments, list_options, make_trainer

HELP = "print the files and commands a train run would write and run (runs nothing)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check everything `lazytune train` with the same arguments would check, then print the plan: "
                    "each file with its content, each step's argv, env and log. Nothing is written or started.\n"
                    "Python: print(finetune.BACKEND(BASE, TARGET, **options).plan(DATA))",
        epilog=OPTIONS_HELP % {"verb": "plan"},
    )  # fmt: skip
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable plan (plan.to_dict())")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.list_options:
        return list_options(args)
    trainer, data = make_trainer(args)
    plan = trainer.plan(data)
    print(json.dumps(plan.to_dict(), indent=2, default=str) if args.json else plan)
    return 0
