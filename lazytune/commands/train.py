"""`lazytune train`: fine-tune, wait with a progress bar, print the result folder (Python: `trainer(data)`)."""

from __future__ import annotations

import argparse
import signal
import sys

from lazytune.progress import MODES

from ._common import OPTIONS_HELP, add_run_arguments, list_options, make_trainer

HELP = "fine-tune a base model and wait for it (progress bar, manifest, loss curve)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune BASE into TARGET with a backend, then merge: TARGET/lazyllm_lora, TARGET/lazyllm_merge "
                    "and the manifest TARGET/lazytune_run.json. Prints the result folder on stdout when done.\n"
                    "Python: finetune.BACKEND(BASE, TARGET, launcher=..., **options)(DATA)",
        epilog=OPTIONS_HELP % {"verb": "train"} + "\n\nexample:\n  lazytune train llamafactory --base models/qwen "
               "--target runs/sft --data train.json learning_rate=2e-4 num_train_epochs=3",
    )  # fmt: skip
    add_run_arguments(parser)
    parser.add_argument("--progress", choices=MODES, default="auto",
                        help="tqdm bar, a line per 10%%, or nothing (auto: bar on a terminal, none with --quiet or "
                             "LAZYTUNE_QUIET=1, lines otherwise)")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no backend output")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="stream the backend's own output to the console (it is always in the step logs)")
    return parser


def _cancel_on_sigterm(signum: int, frame: object) -> None:
    """`lazytune cancel` sends SIGTERM: stop the job cleanly (its process tree, then the manifest says CANCELLED)."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.list_options:
        return list_options(args)
    trainer, data = make_trainer(args, stream=args.verbose and not args.quiet)
    signal.signal(signal.SIGTERM, _cancel_on_sigterm)
    job_run = trainer.start(data)
    plan = job_run.plan
    if not args.quiet:
        print(f"lazytune: run {plan.run_id} ({plan.backend}) started; logs in {plan.run_dir / 'logs'}", file=sys.stderr)
    try:
        result = job_run.wait(progress="none" if args.quiet else args.progress)
    except KeyboardInterrupt:
        print(f"lazytune: run {plan.run_id} cancelled; manifest {plan.target.manifest}", file=sys.stderr)
        return 130
    if not args.quiet:
        loss = job_run.metrics.get("final_loss")
        extra = f", final loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
        print(f"lazytune: run {plan.run_id} done in {job_run.ended - job_run.started:.1f} s{extra}; "
              f"manifest {plan.target.manifest}", file=sys.stderr)  # fmt: skip
    for warning in job_run.metrics.get("warnings") or []:
        print(f"lazytune: warning: {warning}", file=sys.stderr)
    if job_run.metrics.get("uploaded") and not args.quiet:
        print(f"lazytune: uploaded {plan.target.merge} to {job_run.metrics['uploaded']}", file=sys.stderr)
    print(result)
    return 0
