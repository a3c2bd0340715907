"""What a launcher runs (`Step`) and what it hands back (`Job`), independent of where it runs."""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .secrets import mask_secret, redact

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Step:
    """One command of a pipeline: an argv list, never a shell string.

    `distributed=True` means the command is a Python program (``argv = [python, script.py | -m module, args...]``)
    that may be started as several processes; the launcher wraps it in torchrun when it runs more than one.
    `torchrun=True` wraps it in torchrun even with one process: DeepSpeed (through LLaMA-Factory or the HF Trainer)
    needs the distributed environment torchrun sets up, and without it LF refuses and the Trainer tries MPI.
    """

    name: str
    argv: tuple[str, ...]
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    distributed: bool = False
    torchrun: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):
            raise TypeError(f"step {self.name!r}: argv must be a list of strings, not a shell string")
        argv = tuple(str(a) for a in self.argv)
        if not argv:
            raise ValueError(f"step {self.name!r}: empty argv")
        object.__setattr__(self, "argv", argv)
        object.__setattr__(self, "log", Path(self.log))
        object.__setattr__(self, "env", {str(k): str(v) for k, v in dict(self.env).items()})
        if self.cwd is not None:
            object.__setattr__(self, "cwd", Path(self.cwd))
        if self.torchrun and not self.distributed:
            raise ValueError(f"step {self.name!r}: torchrun=True needs distributed=True (a Python program)")

    def runs_torchrun(self, nproc_per_node: int, nnodes: int = 1) -> bool:
        """Whether a launcher starting `nproc_per_node` processes on `nnodes` nodes runs this step under torchrun."""
        return self.distributed and (self.torchrun or nproc_per_node * nnodes > 1)

    def describe(self) -> str:
        """Readable multi-line form: argv one item per line, env with secrets masked."""
        kind = " (distributed, under torchrun)" if self.torchrun else (" (distributed)" if self.distributed else "")
        lines = [f"step {self.name}" + kind]
        lines += [f"  argv[{i}] = {a!r}" for i, a in enumerate(self.argv)]
        for k, v in sorted(self.env.items()):
            lines.append(f"  env {k}={mask_secret(k, v)!r}")
        if self.cwd:
            lines.append(f"  cwd = {str(self.cwd)!r}")
        lines.append(f"  log = {str(self.log)!r}")
        return "\n".join(lines)


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass
class StepResult:
    name: str
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return round(self.ended - self.started, 3)


class JobFailed(RuntimeError):
    """A job ended in any state but COMPLETED. Carries the failed step, its exit code and the end of its log."""

    def __init__(self, job: Job, step: str | None, exit_code: int | None, log_tail: str):
        self.job = job
        self.step = step
        self.exit_code = exit_code
        self.log_tail = log_tail
        where = f"step {step!r}" if step else "job"
        code = f" with exit code {exit_code}" if exit_code is not None else ""
        super().__init__(
            f"{job.name}: {where} {job.state.value}{code}\n--- last lines of {job.log_of(step)} ---\n{log_tail}"
        )


def tail(path: Path | str | None, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a log file, reading at most `max_bytes` from its end."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class Job:
    """A running or finished pipeline of steps. Subclasses implement `_poll` and `_cancel`."""

    poll_seconds = 0.2

    def __init__(self, name: str, steps: Sequence[Step], job_id: str = ""):
        self.name = name
        self.steps = list(steps)
        self.id = job_id
        self.results = [StepResult(s.name) for s in self.steps]
        self._state = JobState.PENDING
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Job], None]] = []
        self._callbacks_done = False
        self.failure_reason: str | None = None

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def state(self) -> JobState:
        if not self._state.finished:
            self._poll()
        return self._state

    def _set_state(self, state: JobState) -> None:
        with self._lock:
            if self._state.finished:
                return
            self._state = state
        if state.finished:
            self._run_callbacks()

    def _poll(self) -> None:
        """Refresh `_state` from the backend (scheduler, process). Local jobs update it from their runner thread."""

    def _cancel(self) -> None:
        raise NotImplementedError

    def add_done_callback(self, fn: Callable[[Job], None]) -> None:
        """Call `fn(job)` once the job has finished (immediately if it already has)."""
        with self._lock:
            already = self._callbacks_done
            if not already:
                self._callbacks.append(fn)
        if already:
            fn(self)

    def _run_callbacks(self) -> None:
        with self._lock:
            if self._callbacks_done:
                return
            self._callbacks_done = True
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    # -- user API --------------------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None, raise_on_failure: bool = True) -> Job:
        """Block until the job finishes. Ctrl-C cancels it. Raises `JobFailed` unless it COMPLETED."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.state.finished:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: still {self._state.value} after {timeout} s")
                time.sleep(self.poll_seconds)
        except KeyboardInterrupt:
            self.cancel()
            raise
        if raise_on_failure and self._state is not JobState.COMPLETED:
            raise self.failure()
        return self

    def cancel(self) -> None:
        """Stop the job and everything it started. Safe to call on a finished job."""
        if self._state.finished:
            return
        self._cancel()

    def failure(self) -> JobFailed:
        step = self.failed_step
        code = self.exit_code
        return JobFailed(self, step, code, self.log_tail(step))

    @property
    def failed_step(self) -> str | None:
        for r in self.results:
            if r.exit_code not in (None, 0):
                return r.name
        for r in self.results:  # cancelled or killed mid-step: the step that started and never ended
            if r.started is not None and r.ended is None:
                return r.name
        return None

    @property
    def exit_code(self) -> int | None:
        for r in self.results:
            if r.exit_code not in (None, 0):
                return r.exit_code
        return 0 if self._state is JobState.COMPLETED else None

    def log_of(self, step: str | None) -> Path | None:
        for s in self.steps:
            if s.name == step:
                return s.log
        return self.steps[-1].log if self.steps else None

    def log_tail(self, step: str | None = None, lines: int = LOG_TAIL_LINES) -> str:
        return redact(tail(self.log_of(step), lines))

    def logs(self) -> str:
        """All step logs so far, concatenated with a header per step."""
        parts = []
        for s in self.steps:
            if s.log.exists():
                parts.append(f"==> {s.name}: {s.log} <==\n{s.log.read_text('utf-8', 'replace')}")
        return redact("\n".join(parts))

    def summary(self) -> dict:
        """Plain data for manifests: state, id, per-step exit codes and timings."""
        return {
            "id": self.id,
            "state": self.state.value,
            "failed_step": self.failed_step,
            "failure_reason": self.failure_reason,
            "steps": [
                {"name": r.name, "exit_code": r.exit_code, "seconds": r.seconds, "log": str(s.log)}
                for r, s in zip(self.results, self.steps, strict=True)
            ],
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} id={self.id!r} {self._state.value}>"
