"""`lazytune logs` (being written)."""

from __future__ import annotations

import argparse

HELP = "logs (not yet available)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return subparsers.add_parser("logs", help=HELP, description=HELP)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("lazytune logs: not implemented yet")
