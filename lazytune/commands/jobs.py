"""`lazytune jobs` (being written)."""

from __future__ import annotations

import argparse

HELP = "jobs (not yet available)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return subparsers.add_parser("jobs", help=HELP, description=HELP)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("lazytune jobs: not implemented yet")
