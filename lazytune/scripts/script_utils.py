"""Pieces the standalone trainer scripts share (they run by path inside backend environments, without lazytune)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    """The records of a JSON array or JSON-lines file (checked by lazytune at plan time)."""
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith("["):
            return json.load(f)
        return [json.loads(line) for line in f if line.strip()]


def jsonl_logger(path: str | Path):
    """A transformers TrainerCallback writing LLaMA-Factory-style trainer_log.jsonl lines (rank 0): what lazytune's
    progress bar, `lazytune jobs` and the loss curve read."""
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
            for key in ("loss", "eval_loss", "train_loss"):
                if isinstance(logs.get(key), (int, float)):
                    entry[key] = logs[key]
            if isinstance(logs.get("learning_rate"), (int, float)):
                entry["lr"] = logs["learning_rate"]
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    return JsonlLog()
