"""A started run: the launcher's Job plus the run manifest (`<target>/lazytune_run.json`)."""

from __future__ import annotations

import errno
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchers import Job, JobState
from launchers.job import secret_values

from .errors import OutputMissingError, PlanWriteError
from .plan import FileSpec

if TYPE_CHECKING:
    from .backends.base import Finetune
    from .plan import Plan

__version__ = "0.1.0"


def package_versions(python: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of `names` in the interpreter `python` (reads metadata only, imports nothing heavy)."""
    if not names:
        return {}
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {n: None for n in names}


def redact_data(value: Any, secrets: list[str]) -> Any:
    """`value` with every secret removed from its strings (structure kept, so the JSON stays valid)."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v, secrets) for v in value]
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (FileSpec.write: temp file + rename, no leftover on a full disk), secrets removed."""
    clean = redact_data(json.loads(json.dumps(data, default=str)), secret_values())
    FileSpec(path, json.dumps(clean, indent=2) + "\n").write()


def controller_sigterm() -> str | None:
    """'cancel' when this process handles SIGTERM by cancelling its job (`lazytune train` does), so that
    `lazytune cancel` may send it; None otherwise (then only the job's own processes are stopped)."""
    handler = signal.getsignal(signal.SIGTERM)
    return "cancel" if getattr(handler, "__module__", "").startswith("lazytune.") else None


class Run:
    """A run in progress or finished. `wait()` returns the result path or raises `JobFailed`."""

    def __init__(self, trainer: Finetune, plan: Plan, job: Job, started: float, versions: dict[str, Any]):
        self.trainer = trainer
        self.plan = plan
        self.job = job
        self.started = started
        self.ended: float | None = None
        self.versions = versions
        self.problems: list[str] = []
        self.metrics: dict[str, Any] = {}
        self.loss_curve: Path | None = None
        self._finalized = threading.Event()

    @classmethod
    def start(cls, trainer: Finetune, plan: Plan) -> Run:
        python = trainer.python()
        versions = {
            "lazytune": __version__,
            "python": platform.python_version(),
            "backend_python": python,
            **package_versions(python, trainer.version_packages),
        }
        job = trainer.launcher.submit(plan.steps, name=f"lazytune-{plan.backend}-{plan.run_id}")
        run = cls(trainer, plan, job, time.time(), versions)
        try:
            run.write_manifest()
        except OSError as exc:  # a job that no manifest records must not go on running unseen
            job.cancel()
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = "the disk is full" if full else exc.strerror or str(exc)
            raise PlanWriteError(exc.errno or 0, f"cannot write {plan.target.manifest}: {reason}") from exc
        job.add_done_callback(run._finish)
        return run

    @property
    def state(self) -> str:
        if self._finalized.is_set():
            return self.manifest_state()
        return self.job.state.value

    def manifest_state(self) -> str:
        if self.job.state is JobState.COMPLETED and self.problems:
            return JobState.FAILED.value
        return self.job.state.value

    def _finish(self, job: Job) -> None:
        self.ended = time.time()
        try:
            self.metrics = self.trainer.metrics(self.plan)
        except Exception as exc:  # metrics are informative; never turn a good run into a crash
            self.metrics = {"error": f"{type(exc).__name__}: {exc}"}
        if job.state is JobState.COMPLETED:
            self.problems = self.trainer.check_outputs(self.plan)
        from .after_run import after_run

        after_run(self)
        self.write_manifest()
        self._finalized.set()

    def wait(self, timeout: float | None = None, progress: str | None = None) -> str:
        """Wait for the job; Ctrl-C cancels it. Returns the result folder; raises JobFailed / OutputMissingError.

        `progress`: 'bar' (tqdm), 'lines' (a line per 10 %), 'none', or None/'auto': none when LAZYTUNE_QUIET=1,
        a bar on a terminal, lines otherwise. Fed by the backend's own log (`trainer.progress_log(plan)`).
        """
        from .progress import watch

        with watch(self.trainer.progress_log(self.plan), progress, desc=self.plan.backend):
            self.job.wait(timeout=timeout, raise_on_failure=False)
        self._finalized.wait()
        if self.job.state is not JobState.COMPLETED:
            raise self.job.failure()
        if self.problems:
            raise OutputMissingError(
                f"{self.plan.backend} run {self.plan.run_id} exited 0 but its outputs are incomplete: "
                + "; ".join(self.problems)
            )
        return str(self.plan.result)

    def cancel(self) -> None:
        self.job.cancel()

    def logs(self) -> str:
        return self.job.logs()

    def manifest(self) -> dict[str, Any]:
        job = self.job.summary()
        state = self.manifest_state() if self._finalized.is_set() else job["state"]
        reason = job["failure_reason"] or ("; ".join(self.problems) if self.problems else None)
        return {
            "lazytune_version": __version__,
            "backend": self.plan.backend,
            "run_id": self.plan.run_id,
            "state": state,
            "reason": reason,
            "started": self.started,
            "ended": self.ended,
            "seconds": round(self.ended - self.started, 3) if self.ended else None,
            "host": socket.gethostname(),
            "controller_pid": os.getpid(),
            "controller_sigterm": controller_sigterm(),
            "argv": sys.argv,
            "launcher": repr(self.trainer.launcher),
            "launcher_kind": type(self.trainer.launcher).__name__.removesuffix("Launcher").lower(),
            "job": job,
            "result": str(self.plan.result) if self.plan.result else None,
            "metrics": self.metrics,
            "progress_log": str(self.trainer.progress_log(self.plan) or "") or None,
            "loss_curve": str(self.loss_curve) if self.loss_curve else None,
            "versions": self.versions,
            "plan": self.plan.to_dict(),
        }

    def write_manifest(self) -> None:
        data = self.manifest()
        write_json_atomic(self.plan.target.manifest, data)
        write_json_atomic(self.plan.run_dir / "lazytune_run.json", data)

    def __repr__(self) -> str:
        return f"<Run {self.plan.backend} {self.plan.run_id} {self.state}>"
