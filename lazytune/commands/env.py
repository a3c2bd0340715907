"""`lazytune env install|list|path|check|lock|remove`: the per-backend virtual environments (see lazytune/envs.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lazytune import envs

HELP = "manage one virtual environment per backend (install, list, path, check, lock, remove)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `env` and its sub-verbs to the top-level CLI's subparsers; returns the `env` parser."""
    names = list(envs.BACKENDS)
    parser = subparsers.add_parser(
        "env",
        help=HELP,
        description=(
            "One virtual environment per backend under $LAZYTUNE_HOME/envs (default ~/.lazytune/envs), installed "
            "exactly from the committed lock configs/envs/<backend>-<cpu|cuda>.txt. A backend's steps run with "
            "LAZYTUNE_<BACKEND>_PYTHON if set, else its installed environment, else this Python."
        ),
    )
    sub = parser.add_subparsers(dest="env_command", metavar="{install,list,path,check,lock,remove}")
    sub.required = True

    p = sub.add_parser("install", help="create or update environments from their locks (skipped when up to date)")
    p.add_argument("backends", nargs="*", metavar="BACKEND", help=f"one or more of: {', '.join(names)}")
    p.add_argument("--all", action="store_true", help="every environment")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    torch = p.add_mutually_exclusive_group()
    torch.add_argument(
        "--cpu", dest="cuda", action="store_false", default=None, help="the CPU lock: torch's CPU-only build"
    )
    torch.add_argument(
        "--cuda", dest="cuda", action="store_true",
        help="the CUDA lock (torch for the driver nvidia-smi reports, + bitsandbytes, deepspeed); default: if "
        "nvidia-smi lists a GPU",
    )  # fmt: skip
    p.add_argument(
        "--with", dest="with_", default="", metavar="PKG[,PKG]",
        help="optional packages locked beside the environment: " + ", ".join(envs.OPTIONAL_PACKAGES),
    )  # fmt: skip

    p = sub.add_parser("list", help="every environment: state, path, interpreter used")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("path", help="print an environment's folder (or its interpreter with --python)")
    p.add_argument("backend", metavar="BACKEND", help=f"one of: {', '.join(names)}")
    p.add_argument("--python", action="store_true", help="print the interpreter the backend's steps run with")

    p = sub.add_parser(
        "check", help="import the backend with its interpreter, report versions and every package that differs "
        "from the lock",
    )  # fmt: skip
    p.add_argument("backends", nargs="*", metavar="BACKEND", help=f"one or more of: {', '.join(names)}")
    p.add_argument("--all", action="store_true", help="every environment")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "lock", help="make a new lock from a fresh resolution (installed, checked and smoke-run before it is written)"
    )
    p.add_argument("backends", nargs="*", metavar="BACKEND", help=f"one or more of: {', '.join(names)}")
    p.add_argument("--all", action="store_true", help="every environment")
    p.add_argument("--cuda", action="store_true", help="the CUDA variant (default: the CPU one)")
    p.add_argument("--output", type=Path, help="write here instead of configs/envs/<backend>-<variant>.txt")
    p.add_argument("--no-smoke", dest="smoke", action="store_false", help="resolve only; skip install and smoke run")

    p = sub.add_parser("remove", help="delete a managed environment")
    p.add_argument("backends", nargs="+", metavar="BACKEND", help=f"one or more of: {', '.join(names)}")

    parser.set_defaults(command_module=__name__)
    return parser


def _selected(args: argparse.Namespace) -> list[str]:
    chosen = list(envs.BACKENDS) if getattr(args, "all", False) else list(args.backends)
    if not chosen:
        raise envs.EnvError("name at least one backend, or pass --all")
    for name in chosen:
        envs.get_spec(name)  # unknown names fail before anything is installed
    return chosen


def _size(stamp: dict | None) -> str:
    if not stamp or "size_bytes" not in stamp:
        return ""
    return f"{stamp['size_bytes'] / 1e9:.1f} GB, built in {stamp.get('install_seconds', 0):.0f} s"


def _print_check(result: dict) -> None:
    print(envs.format_check(result))


def run(args: argparse.Namespace) -> int:
    """Carry out `lazytune env ...`; returns the exit code."""
    try:
        return _run(args)
    except envs.EnvError as exc:
        print(f"lazytune env: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    command = args.env_command
    if command == "install":
        with_ = [w.strip() for w in args.with_.split(",") if w.strip()]
        for name in _selected(args):
            envs.install(name, force=args.force, cuda=args.cuda, with_=with_)
        return 0
    if command == "lock":
        names = _selected(args)
        if args.output and len(names) > 1:
            raise envs.EnvError("--output takes one backend")
        for name in names:
            envs.lock(name, cuda=args.cuda, output=args.output, smoke=args.smoke)
        return 0
    if command == "list":
        rows = envs.list_envs()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            state = r["state"] + (f" (overridden by {envs.python_variable(r['name'])})" if r["override"] else "")
            print(f"{r['name']:<{width}}  {state:<10}  {r['path']}  {_size(r['stamp'])}".rstrip())
            print(f"{'':<{width}}  runs with {r['python']}")
        return 0
    if command == "path":
        print(envs.python_for(args.backend) if args.python else envs.env_dir(args.backend))
        return 0
    if command == "check":
        results = [envs.check(name) for name in _selected(args)]
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for result in results:
                _print_check(result)
        return 0 if all(r["ok"] for r in results) else 1
    if command == "remove":
        for name in _selected(args):
            print(f"{name}: {'removed' if envs.remove(name) else 'not installed'}")
        return 0
    raise envs.EnvError(f"unknown env command {command!r}")  # pragma: no cover - argparse rejects it first


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m lazytune.commands.env ...`), used until/besides `lazytune env`."""
    parser = argparse.ArgumentParser(prog="lazytune")
    add_parser(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["env", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
