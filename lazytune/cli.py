"""`lazytune`: the command line, a thin skin over the Python API (one module per verb in lazytune/commands/).

Exit codes: 0 success, 1 the job failed (the log tail is printed), 2 bad input (options, data, paths),
130 interrupted or cancelled.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from launchers import JobFailed

from .errors import ConfigError, LazytuneError
from .run import __version__

#: Verbs in the order `lazytune --help` lists them; each is lazytune.commands.<verb> with add_parser() and run().
COMMANDS = ("train", "plan", "chat", "eval", "jobs", "logs", "cancel", "env")

DESCRIPTION = """\
Fine-tune LLMs with one interface over LLaMA-Factory, alpaca-lora, FlagEmbedding and CoLLiE,
run on this machine or on SLURM. Every command has a Python equivalent (see the README).

examples:
  lazytune train llamafactory --base models/tiny --target runs/sft --data train.json learning_rate=2e-4
  lazytune plan dummy --base models/tiny --target runs/try          # print files and argv, run nothing
  lazytune chat runs/sft --prompt "Hello" --compare                 # base and fine-tuned answers
  lazytune eval runs/sft --data heldout.json                        # did the fine-tune help?
  lazytune jobs                                                     # runs under the targets root
  lazytune logs <run> -f                                            # follow a run's logs
  lazytune cancel <run>                                             # stop a run and all its processes
  lazytune env install llamafactory                                 # a backend's own environment
"""

EPILOG = """\
exit codes: 0 ok, 1 the job failed (its log tail is printed), 2 bad input, 130 interrupted/cancelled.
settings: LAZYTUNE_TRAIN_TARGET_ROOT (where relative targets go and `jobs` looks), LAZYTUNE_QUIET=1 (no progress
bar), LAZYTUNE_HOME (environments, URL cache); see the README for the full list."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one sub-parser per verb, each added by its own module."""
    parser = argparse.ArgumentParser(
        prog="lazytune", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"lazytune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for verb in COMMANDS:
        module = importlib.import_module(f"lazytune.commands.{verb}")
        sub_parser = module.add_parser(sub)
        sub_parser.set_defaults(command_module=module.__name__)
    return parser


def error(message: str) -> None:
    print(f"lazytune: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the verb, turn known failures into messages and exit codes."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "options") and not any(e.startswith("-") for e in extra):
        args.options = [*args.options, *extra]  # key=value pairs given after --flags
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(args.command_module)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if getattr(args, "quiet", False):
            warnings.simplefilter("ignore")  # --quiet: only errors
        return _run(module, args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"lazytune: warning: {message}", file=sys.stderr)


def _run(module: object, args: argparse.Namespace) -> int:
    try:
        return int(module.run(args) or 0)  # type: ignore[attr-defined]
    except ConfigError as exc:
        error(str(exc))
        return 2
    except JobFailed as exc:
        error(str(exc))
        return 130 if exc.job.state.value == "CANCELLED" else 1
    except LazytuneError as exc:
        error(str(exc))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:  # `lazytune logs x | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
