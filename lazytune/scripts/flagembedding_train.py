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
import json
import runpy
import sys
import time


def jsonl_logger(path: str):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.start, self.first_step = time.time(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            step, total = state.global_step, max(state.max_steps, 1)
            elapsed = time.time() - self.start
            done = max(step - self.first_step, 1)
            entry = {"current_steps": step, "total_steps": total, "epoch": round(state.epoch or 0, 4),
                     "percentage": round(100 * step / total, 2), "elapsed_time": round(elapsed, 2),
                     "remaining_time": round(elapsed / done * (total - step), 2)}  # fmt: skip
            for key in ("loss", "train_loss"):
                if isinstance(logs.get(key), (int, float)):
                    entry[key] = logs[key]
            if isinstance(logs.get("learning_rate"), (int, float)):
                entry["lr"] = logs["learning_rate"]
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    return JsonlLog()


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
