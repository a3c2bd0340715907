"""Runs found from their manifests (`<target>/lazytune_runs/<run_id>/lazytune_run.json`): list, logs, cancel.

    from lazytune import runs
    for r in runs.find_runs():          # under LAZYTUNE_TRAIN_TARGET_ROOT (default: the current folder)
        print(r.run_id, r.state, r.progress())
    runs.find_run("20260101-120000-ab12cd").cancel()

This works from any process: the controller that started a run (a `lazytune train` or a Python script) records its
host, pid and job id in the manifest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from launchers.job import redact
from launchers.local import kill_tree

from .config import settings
from .errors import ConfigError, LazytuneError
from .progress import read_trainer_log, summarize

MANIFEST = "lazytune_run.json"
RUNS_DIR = "lazytune_runs"
SKIP_DIRS = {"lazyllm_lora", "lazyllm_merge", RUNS_DIR, "lazytune_eval", "lazytune_chat", "node_modules", "__pycache__"}
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "LOST"}


class CancelError(LazytuneError):
    """A run could not be cancelled from here (another host, scheduler refused)."""


@dataclass
class RunRecord:
    """One run, as its manifest describes it. `state` accounts for a controller that died without saying so."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read run manifest {path}: {exc}") from exc
        if not isinstance(data, dict) or "run_id" not in data:
            raise ConfigError(f"{path} is not a lazytune run manifest")
        return cls(Path(path), data)

    def reload(self) -> RunRecord:
        self.data = RunRecord.load(self.path).data
        return self

    # -- facts -------------------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def backend(self) -> str:
        return self.data.get("backend", "?")

    @property
    def target(self) -> Path:
        return Path(self.data.get("plan", {}).get("target", {}).get("root") or self.path.parent.parent.parent)

    @property
    def launcher_kind(self) -> str:
        kind = self.data.get("launcher_kind")
        if kind:
            return kind
        return "slurm" if str(self.data.get("launcher", "")).startswith("launchers.slurm") else "local"

    def steps(self) -> list[dict[str, Any]]:
        return list(self.data.get("job", {}).get("steps", []))

    def controller_alive(self) -> bool | None:
        """Whether the process that started the run still runs (None: it ran on another host)."""
        if self.data.get("host") != socket.gethostname():
            return None
        pid = self.data.get("controller_pid")
        try:
            proc = psutil.Process(int(pid))
            return proc.create_time() <= float(self.data.get("started") or time.time()) + 1 and proc.is_running()
        except (psutil.Error, TypeError, ValueError):
            return False

    @property
    def state(self) -> str:
        """The manifest's state; LOST when it says running but its local controller is gone."""
        state = self.data.get("state", "?")
        if state in FINISHED or self.controller_alive() is not False:
            return state
        if self.launcher_kind == "slurm":  # nobody waits for the job any more: ask the scheduler
            return self._slurm_state() or state
        return "LOST"

    def _slurm_state(self) -> str | None:
        from launchers.slurm import map_state, parse_scontrol_job

        job_id = str(self.data.get("job", {}).get("id") or "")
        try:
            proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        state = map_state(parse_scontrol_job(proc.stdout).get("JobState", "")) if proc.returncode == 0 else None
        return state.value if state is not None else None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def progress(self) -> dict[str, Any]:
        """{'step', 'total_steps', 'final_loss'} read from the backend's own log (empty when it has none)."""
        log = self.data.get("progress_log")
        return summarize(read_trainer_log(Path(log))) if log else {}

    def log_paths(self, step: str | None = None) -> list[tuple[str, Path]]:
        steps = [(s["name"], Path(s["log"])) for s in self.steps() if s.get("log")]
        if step is not None:
            steps = [s for s in steps if s[0] == step]
            if not steps:
                names = ", ".join(s["name"] for s in self.steps())
                raise ConfigError(f"run {self.run_id} has no step {step!r} (steps: {names})")
        return steps

    def logs(self, step: str | None = None, lines: int | None = None) -> str:
        """The step logs (secrets masked), each under a header; `lines`: only the last lines of each."""
        parts = []
        for name, path in self.log_paths(step):
            if not path.exists():
                continue
            text = path.read_text("utf-8", "replace")
            if lines is not None:
                text = "\n".join(text.splitlines()[-lines:]) + "\n"
            parts.append(f"==> {name}: {path} <==\n{text}")
        return redact("".join(parts))

    # -- after training (lazytune/evaluate.py) ----------------------------------------------------------------------
    def chat(self, prompt: str | None = None, *, base: bool = False, compare: bool = False, system: str | None = None,
             max_new_tokens: int = 128, launcher: Any = None) -> Any:
        """The fine-tuned model's answer to `prompt` (base=True: the base model's; compare=True: {"base", "tuned"}).
        Without a prompt: an `evaluate.ChatSession` that keeps the conversation (`.ask(text)`, `.reset()`)."""
        from . import evaluate

        model = evaluate.tuned_model(self)
        kw = dict(base=base, compare=compare, system=system, max_new_tokens=max_new_tokens, launcher=launcher)
        if prompt is None:
            return evaluate.ChatSession(model, **kw)
        answers = evaluate.chat(model, prompt, **kw)[0]
        return answers if compare else next(iter(answers.values()))

    def rank(self, query: str, passages: list[str], *, launcher: Any = None) -> list[dict[str, Any]]:
        """Embedders / rerankers: each passage with its base and fine-tuned score, best fine-tuned score first."""
        from . import evaluate

        return evaluate.rank(evaluate.tuned_model(self), query, passages, launcher=launcher)

    def evaluate(self, data: Any, *, max_samples: int | None = None, generate: bool = False, max_new_tokens: int = 64,
                 launcher: Any = None, progress: str | None = None) -> dict[str, Any]:
        """Base vs fine-tuned on `data` (training formats): {"base": {...}, "tuned": {...}, "change": {...}, ...},
        saved to <target>/lazytune_eval/<time>.json."""
        from . import evaluate

        return evaluate.evaluate(evaluate.tuned_model(self), data, max_samples=max_samples, generate=generate,
                                 max_new_tokens=max_new_tokens, launcher=launcher, progress=progress)

    # -- cancel ------------------------------------------------------------------------------------------------
    def cancel(self, timeout: float = 30.0) -> str:
        """Stop the run and every process it started; the manifest then says CANCELLED. Returns what was done."""
        if self.data.get("state") in FINISHED:
            return f"run {self.run_id} already {self.data['state']}"
        if self.launcher_kind == "slurm":
            return self._cancel_slurm(timeout)
        alive = self.controller_alive()
        if alive is None:
            raise CancelError(
                f"run {self.run_id} is controlled from host {self.data.get('host')} (pid "
                f"{self.data.get('controller_pid')}); run `lazytune cancel {self.run_id}` there"
            )
        pid = int(self.data["controller_pid"])
        if alive and self.data.get("controller_sigterm") == "cancel":
            os.kill(pid, signal.SIGTERM)  # `lazytune train` cancels its job and writes the manifest itself
            if self._wait_finished(timeout):
                return f"run {self.run_id} cancelled (controller pid {pid} stopped its job)"
        killed, deadline = 0, time.monotonic() + timeout
        while True:  # a controller may start the next step meanwhile: stop each one until the job gives up
            killed += self._kill_steps(pid if alive else None)
            if self._wait_finished(0.3) or not alive or time.monotonic() > deadline:
                break
        if self.data.get("state") == "COMPLETED":
            return f"run {self.run_id} completed before it could be cancelled"
        self.mark("CANCELLED", "cancelled by `lazytune cancel`")
        return f"run {self.run_id} cancelled ({killed} process tree(s) stopped)"

    def _step_processes(self, controller: int | None) -> list[psutil.Process]:
        """The step processes: the controller's children that lead their own session (the local launcher starts
        each step so), or, with no controller left, processes running a step's exact argv."""
        if controller is not None:
            try:
                children = psutil.Process(controller).children(recursive=True)
            except psutil.Error:
                children = []
            out = []
            for p in children:
                try:
                    if os.getsid(p.pid) == p.pid:
                        out.append(p)
                except OSError:
                    pass
            return out
        argvs = [s.get("argv") for s in self.data.get("plan", {}).get("steps", [])]
        out = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info.get("cmdline") or []
            if any(a and (cmd == a or cmd[-len(a) + 1:] == a[1:]) for a in argvs):  # also under torchrun
                out.append(p)
        return out

    def _kill_steps(self, controller: int | None) -> int:
        procs = self._step_processes(controller)
        for p in procs:
            kill_tree(p.pid)
        return len(procs)

    def _cancel_slurm(self, timeout: float) -> str:
        job_id = self.data.get("job", {}).get("id")
        if not job_id:
            raise CancelError(f"run {self.run_id}: the manifest has no SLURM job id")
        proc = subprocess.run(["scancel", str(job_id)], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise CancelError(f"scancel {job_id} failed: {proc.stderr.strip() or proc.returncode}")
        if not self._wait_finished(timeout if self.controller_alive() else 0):
            self.mark("CANCELLED", f"SLURM job {job_id} cancelled by `lazytune cancel`")
        return f"run {self.run_id}: SLURM job {job_id} cancelled"

    def _wait_finished(self, timeout: float) -> bool:
        """Wait until the manifest says the run ended (its controller writes it) or the controller is gone."""
        deadline = time.monotonic() + timeout
        while True:
            self.reload()
            if self.data.get("state") in FINISHED:
                return True
            if time.monotonic() >= deadline or self.controller_alive() is False:
                return False
            time.sleep(0.2)

    def mark(self, state: str, reason: str) -> None:
        """Record a final state in this run's manifest (and in the target's copy when it is this run's)."""
        from .run import write_json_atomic

        self.reload()
        if self.data.get("state") == state:
            return
        self.data.update(state=state, reason=reason, ended=self.data.get("ended") or time.time())
        self.data.setdefault("job", {})["state"] = state
        write_json_atomic(self.path, self.data)
        top = self.target / MANIFEST
        try:
            if json.loads(top.read_text(encoding="utf-8")).get("run_id") == self.run_id:
                write_json_atomic(top, self.data)
        except (OSError, ValueError):
            pass


def _manifests(root: Path, max_depth: int) -> Iterator[Path]:
    for folder, dirs, _ in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if RUNS_DIR in dirs:
            yield from sorted(Path(folder, RUNS_DIR).glob(f"*/{MANIFEST}"))
        dirs[:] = [] if depth >= max_depth else sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))


def find_runs(root: str | os.PathLike | None = None, max_depth: int = 4) -> list[RunRecord]:
    """Every run under `root` (default LAZYTUNE_TRAIN_TARGET_ROOT), oldest first. Unreadable manifests are skipped."""
    base = Path(root).expanduser() if root is not None else settings().train_target_root
    records = []
    for path in _manifests(base.absolute(), max_depth):
        try:
            records.append(RunRecord.load(path))
        except ConfigError:
            continue
    return sorted(records, key=lambda r: (r.data.get("started") or 0, r.run_id))


def find_run(ref: str | os.PathLike, root: str | os.PathLike | None = None) -> RunRecord:
    """A run from its id (or a unique prefix), its target folder (latest run), run folder or manifest path."""
    path = Path(ref).expanduser()
    if path.is_file():
        return RunRecord.load(path)
    if (path / MANIFEST).is_file():
        record = RunRecord.load(path / MANIFEST)
        own = path / RUNS_DIR / record.run_id / MANIFEST  # the per-run copy is the one cancel updates
        return RunRecord.load(own) if own.is_file() else record
    records = find_runs(root)
    matches = [r for r in records if r.run_id == str(ref)] or [r for r in records if r.run_id.startswith(str(ref))]
    where = Path(root) if root is not None else settings().train_target_root
    if not matches:
        raise ConfigError(f"no run {str(ref)!r} under {where.absolute()} (give a run id, a target folder or a "
                          "manifest path; --root or LAZYTUNE_TRAIN_TARGET_ROOT says where to look)")  # fmt: skip
    if len({r.run_id for r in matches}) > 1:
        raise ConfigError(f"{str(ref)!r} matches several runs: {', '.join(r.run_id for r in matches)}")
    return matches[-1]
