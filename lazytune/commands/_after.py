"""What `chat` and `eval` share: the run argument, the launcher flags (the same as train's), the model notes."""

from __future__ import annotations

import argparse
import sys

from launchers import Launcher
from lazytune.evaluate import TunedModel, default_launcher, tuned_model
from lazytune.runs import find_run

from ._common import LAUNCHERS, make_launcher

LAUNCHER_FLAGS = ("launcher", "ngpus", "nproc", "nnodes", "partition")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN|TARGET", help="a run id (or unique prefix), a target folder (its latest "
                        "run) or a manifest path")  # fmt: skip
    parser.add_argument("--root", metavar="DIR", help="where run ids are looked up "
                        "(default LAZYTUNE_TRAIN_TARGET_ROOT)")
    parser.add_argument("--launcher", choices=LAUNCHERS, help="where the model runs (default: this machine, on a GPU "
                        "when there is one)")  # fmt: skip
    parser.add_argument("--ngpus", type=int, metavar="N", help="GPUs (as for train)")
    parser.add_argument("--nproc", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--nnodes", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--partition", metavar="NAME", help="SLURM partition (slurm/remote only)")


def launcher_of(args: argparse.Namespace) -> Launcher:
    """The launcher the flags ask for; none given: this machine, GPU if present."""
    if all(getattr(args, f, None) is None for f in LAUNCHER_FLAGS):
        return default_launcher()
    return make_launcher(args, stream=False)


def model_of(args: argparse.Namespace) -> TunedModel:
    """The run's fine-tuned model; its notes (e.g. 'merge failed: base + adapter') go to stderr."""
    model = tuned_model(find_run(args.run, args.root))
    for note in model.notes:
        print(f"lazytune: note: {note}", file=sys.stderr)
    return model
