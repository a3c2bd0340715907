"""Runs a FlagEmbedding fine-tuning module unchanged, plus one TrainerCallback writing a JSON-lines trainer log.

Standalone (never imports lazytune). Run with the flagembedding environment's Python (under torchrun for several
processes):

    python flagembedding_train.py --trainer-log LOG -m FlagEmbedding.finetune.embedder.encoder_only.base ARGS...

is `python -m FlagEmbedding.finetune.embedder.encoder_only.base ARGS...` (same arguments, same parser, same weights)
with LOG getting one line per logging step on rank 0 (current_steps, total_steps, loss, lr, elapsed/remaining time):
the file lazytune's progress bar, `lazytune jobs` and the loss curve read.
"""

from __future__ import annotations

import functools
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run by path in a backend env: its sibling modules
from script_utils import jsonl_logger  # noqa: E402


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[0] != "--trainer-log" or argv[2] != "-m":
        sys.exit("usage: flagembedding_train.py --trainer-log LOG -m MODULE [ARGS...]")
    log, module, rest = argv[1], argv[3], argv[4:]
    import transformers

    original_init = transformers.Trainer.__init__

    @functools.wraps(original_init)  # FlagEmbedding reads Trainer.__init__'s signature (processing_class or tokenizer)
    def init_with_log(self, *args, **kw):  # every FlagEmbedding trainer is a transformers.Trainer
        original_init(self, *args, **kw)
        self.add_callback(jsonl_logger(log))

    transformers.Trainer.__init__ = init_with_log
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
