"""Training progress from a backend's own log (LLaMA-Factory's trainer_log.jsonl format), never from the console.

A backend says where that log is with `Finetune.progress_log(plan)`. While a sync run is waited for, `watch()`
polls the file and shows a tqdm bar (step / total, loss, ETA), or a plain line every 10 % when stderr is not a
terminal; nothing when quiet (LAZYTUNE_QUIET=1). After the run `plot_loss()` draws the loss curve PNG.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .config import settings

MODES = ("auto", "bar", "lines", "none")


def read_trainer_log(path: Path) -> list[dict[str, Any]]:
    """Entries of a trainer_log.jsonl written so far; a half-written last line is skipped."""
    entries = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    entries.append(entry)
    except FileNotFoundError:
        pass
    return entries


def step_of(entry: dict[str, Any]) -> tuple[int | None, int | None]:
    """(step, total steps) of a log entry: LLaMA-Factory's current_steps/total_steps, or HF's step/max_steps."""
    step = entry.get("current_steps", entry.get("step"))
    total = entry.get("total_steps", entry.get("max_steps"))
    number = (int, float)
    return (int(step) if isinstance(step, number) else None, int(total) if isinstance(total, number) else None)


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps done, total steps, first and last loss from log entries (for `lazytune jobs` and the manifest)."""
    step = total = None
    losses = []
    for e in entries:
        s, t = step_of(e)
        step, total = s if s is not None else step, t if t is not None else total
        if isinstance(e.get("loss"), (int, float)):
            losses.append(e["loss"])
    return {"step": step, "total_steps": total, "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None}


class LogFollower:
    """Reads the complete lines added to a JSON-lines log since the last call (the file may not exist yet)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def new_entries(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, 2)
                if f.tell() < self._offset:  # the trainer started the file again
                    self._offset, self._partial = 0, b""
                f.seek(self._offset)
                data = f.read()
                self._offset = f.tell()
        except OSError:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next call
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out


def resolve_mode(mode: str | None, stream: IO[str] | None = None) -> str:
    """'bar', 'lines' or 'none': quiet wins, then a terminal gets a bar, anything else a line per 10 %."""
    mode = mode or "auto"
    if mode not in MODES:
        raise ValueError(f"progress must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    if settings().quiet:
        return "none"
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


class Progress:
    """Shows the progress read from a log: `update()` polls it once; `close()` ends the bar."""

    def __init__(self, log: Path, mode: str = "bar", file: IO[str] | None = None, desc: str = "train", every: int = 10):
        self.follower = LogFollower(log)
        self.mode = mode
        self.file = file or sys.stderr
        self.desc = desc
        self.every = every
        self.step = 0
        self.total: int | None = None
        self.loss: float | None = None
        self._last_line_pct = -1
        self._t0 = time.monotonic()
        self._bar: Any = None

    def update(self) -> None:
        for entry in self.follower.new_entries():
            step, total = step_of(entry)
            if total:
                self.total = total
            if isinstance(entry.get("loss"), (int, float)):
                self.loss = entry["loss"]
            if step is not None and step >= self.step:
                self.step = step
                self._show()

    def _show(self) -> None:
        if self.mode == "bar":
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=self.desc, unit="step", file=self.file, dynamic_ncols=True)
            if self.total and self._bar.total != self.total:
                self._bar.total = self.total
            if self.loss is not None:
                self._bar.set_postfix(loss=f"{self.loss:.4g}", refresh=False)
            self._bar.update(self.step - self._bar.n)
        elif self.mode == "lines" and self.total:
            pct = int(100 * self.step / self.total) // self.every * self.every
            if pct > self._last_line_pct:
                self._last_line_pct = pct
                loss = f" loss={self.loss:.4g}" if self.loss is not None else ""
                eta = ""
                if 0 < self.step < self.total:
                    left = (time.monotonic() - self._t0) / self.step * (self.total - self.step)
                    eta = f" eta {int(left) // 3600}:{int(left) % 3600 // 60:02d}:{int(left) % 60:02d}"
                print(f"lazytune: {self.desc} step {self.step}/{self.total} ({pct}%){loss}{eta}", file=self.file,
                      flush=True)  # fmt: skip

    def close(self) -> None:
        self.update()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def watch(log: Path | None, mode: str | None = None, file: IO[str] | None = None, desc: str = "train",
          interval: float = 0.5) -> Iterator[Progress | None]:
    """Show progress from `log` in a background thread while the `with` block runs (e.g. `job.wait()`)."""
    resolved = resolve_mode(mode, file)
    if log is None or resolved == "none":
        yield None
        return
    progress = Progress(Path(log), resolved, file, desc)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            progress.update()

    thread = threading.Thread(target=poll, name="lazytune-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        progress.close()


def plot_loss(log: Path, png: Path, title: str = "training loss") -> Path | None:
    """Draw loss per step from `log` into `png` (matplotlib, Agg; no global state). None when there is nothing to
    draw; ImportError when matplotlib is not installed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(step_of(e)[0], e["loss"]) for e in read_trainer_log(log) if isinstance(e.get("loss"), (int, float))]
    points = [(s, v) for s, v in points if s is not None]
    if not points:
        return None
    steps, losses = zip(*points, strict=True)
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="#1f77b4", alpha=0.4 if len(points) > 10 else 1.0, label="original")
    if len(points) > 10:
        smooth, value = [], losses[0]
        for v in losses:
            value = 0.9 * value + 0.1 * v
            smooth.append(value)
        ax.plot(steps, smooth, color="#1f77b4", label="smoothed")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png
