"""`lazytune cancel` (being written)."""

from __future__ import annotations

import argparse

HELP = "cancel (not yet available)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return subparsers.add_parser("cancel", help=HELP, description=HELP)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("lazytune cancel: not implemented yet")
