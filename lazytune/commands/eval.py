"""`lazytune eval`: did the fine-tune help? Base vs fine-tuned on a data set (Python: `run.evaluate(data)`)."""

from __future__ import annotations

import argparse
import json

from lazytune.evaluate import evaluate, table
from lazytune.progress import MODES

from ._after import add_arguments, launcher_of, model_of

HELP = "measure a fine-tuned model against its base on a data set (loss, perplexity, recall/MRR, ...)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate the run's fine-tuned model and its base on --data (the formats training reads).\n"
                    "LLMs: mean loss over the answer tokens and perplexity; --generate adds exact_match, rouge-l and "
                    "bleu-4 of greedy answers against the references (LLaMA-Factory's predict metrics, 0-100).\n"
                    "Embedders and rerankers: recall@1/5/10 and MRR of the positives among the negatives.\n"
                    "Saved to TARGET/lazytune_eval/<time>.json; `lazytune jobs` shows the latest.\n"
                    "Python: runs.find_run(RUN).evaluate(data, max_samples=N, generate=True)",
        epilog="example:\n  lazytune eval runs/sft --data heldout.json --generate --max-samples 200",
    )  # fmt: skip
    add_arguments(parser)
    parser.add_argument("--data", action="append", required=True, metavar="FILE", help="eval data (repeatable)")
    parser.add_argument("--max-samples", type=int, metavar="N", help="use at most N records "
                        "(per file for LLaMA-Factory)")
    parser.add_argument("--generate", action="store_true", help="LLMs: also generate answers and score them")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="answer length cap with --generate")
    parser.add_argument("--json", action="store_true", help='print {"base": {...}, "tuned": {...}, "records": N, ...}')
    parser.add_argument("--progress", choices=MODES, default="auto", help="progress display (auto: bar on a terminal)")
    return parser


def run(args: argparse.Namespace) -> int:
    model = model_of(args)
    report = evaluate(model, args.data, max_samples=args.max_samples, generate=args.generate,
                      max_new_tokens=args.max_new_tokens, launcher=launcher_of(args),
                      progress="none" if args.json and args.progress == "auto" else args.progress)  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report))
        print(f"saved: {report['saved']}")
    return 0
