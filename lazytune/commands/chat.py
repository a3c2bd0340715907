"""`lazytune chat`: talk to a fine-tuned model (or its base, or both side by side); rank passages with an embedder.

Python: `runs.find_run(RUN).chat(prompt, compare=True)`, `.chat()` for a session, `.rank(query, passages)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lazytune.errors import ConfigError
from lazytune.evaluate import ChatSession, chat, rank

from ._after import add_arguments, launcher_of, model_of

HELP = "chat with a fine-tuned model (or compare it with its base); rank passages with an embedder/reranker"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "chat", help=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load the run's merged model (base + LoRA adapter when there is no merge) in the backend's own "
                    "environment, with the chat template the run trained with, and answer. With --prompt: one "
                    "answer, then exit. Without: a conversation (history kept; /reset forgets it; Ctrl-D exits).\n"
                    "Embedders and rerankers: --query and --passages rank the passages with base and fine-tuned "
                    "scores.\nPython: runs.find_run(RUN).chat(prompt, compare=True) / .rank(query, passages)",
        epilog="examples:\n  lazytune chat runs/sft --prompt 'Spell the digit 3' --compare\n"
               "  lazytune chat runs/sft                      # interactive\n"
               "  lazytune chat runs/embed --query 'what is x' --passages passages.txt",
    )  # fmt: skip
    add_arguments(parser)
    parser.add_argument("--prompt", metavar="TEXT", help="answer this once and exit")
    parser.add_argument("--base", action="store_true", help="the base model instead of the fine-tuned one")
    parser.add_argument("--compare", action="store_true", help="base and fine-tuned answers side by side")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length cap (128)")
    parser.add_argument("--system", metavar="TEXT", help="system prompt (alpaca: the input field)")
    parser.add_argument("--query", metavar="TEXT", help="embedders/rerankers: the query to rank --passages for")
    parser.add_argument("--passages", metavar="FILE", help="embedders/rerankers: passages, one per line (or a JSON "
                        "list of strings)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the answer(s) / ranking as JSON")
    return parser


def read_passages(path: str) -> list[str]:
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read passages {file}: {exc.strerror or exc}") from exc
    if text.lstrip().startswith("["):
        try:
            passages = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{file}: invalid JSON: {exc}") from exc
        if not isinstance(passages, list) or not all(isinstance(p, str) for p in passages):
            raise ConfigError(f"{file}: expected a JSON list of strings")
    else:
        passages = [line.strip() for line in text.splitlines() if line.strip()]
    if not passages:
        raise ConfigError(f"{file} holds no passage (one per line, or a JSON list of strings)")
    return passages


def show(answers: dict[str, str], as_json: bool = False) -> None:
    """One answer as it is; base and fine-tuned one above the other, labelled; or the JSON object."""
    if as_json:
        print(json.dumps(answers))
    elif len(answers) == 1:
        print(next(iter(answers.values())))
    else:
        for name, label in (("base", "base      "), ("tuned", "fine-tuned")):
            print(f"{label}: {answers[name]}")


def run(args: argparse.Namespace) -> int:
    if (args.query is None) != (args.passages is None):
        raise ConfigError("--query and --passages go together (embedders and rerankers)")
    if args.prompt is not None and not args.prompt.strip():
        raise ConfigError("--prompt is empty: give some text to answer")
    model = model_of(args)
    launcher = launcher_of(args)
    if args.query is not None:
        if not args.query.strip():
            raise ConfigError("--query is empty")
        ranking = rank(model, args.query, read_passages(args.passages), launcher=launcher)
        if args.json:
            print(json.dumps(ranking, indent=2))
        else:
            print(f"{'tuned':>8}  {'base':>8}  passage")
            for row in ranking:
                print(f"{row['tuned']:8.4f}  {row['base']:8.4f}  {row['passage']}")
        return 0
    kw = dict(base=args.base, compare=args.compare, system=args.system, max_new_tokens=args.max_new_tokens,
              launcher=launcher)  # fmt: skip
    if args.prompt is not None:
        show(chat(model, args.prompt, **kw)[0], args.json)
        return 0
    return interactive(ChatSession(model, **kw), args.json)


def interactive(session: ChatSession, as_json: bool) -> int:
    """Read questions until Ctrl-D; /reset forgets the conversation."""
    tty = sys.stdin.isatty()
    if tty:
        print(f"lazytune chat: {', '.join(session.names)} loaded. /reset forgets the conversation, Ctrl-D exits.",
              file=sys.stderr)  # fmt: skip
    try:
        while True:
            try:
                line = input("you> " if tty else "")
            except EOFError:
                break
            text = line.strip()
            if not text:
                continue
            if text == "/reset":
                session.reset()
                print("lazytune: conversation forgotten", file=sys.stderr)
                continue
            show(session.ask(text), as_json)
            sys.stdout.flush()
    finally:
        session.close()
    return 0
