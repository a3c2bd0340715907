"""One run: live (started here: the launcher's Job plus its plan) or loaded back from its manifest (`Run.load`).

The manifest (`<target>/lazytune_run.json`, and `<target>/lazytune_runs/<run_id>/lazytune_run.json`) records the
options, plan, versions, timings, exit codes, metrics; `lazytune jobs/logs/cancel` (lazytune.runs) read it back from
any process: the controller that started a run records its host, pid and job id there.
"""

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
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from launchers import Job, JobState, Launcher
from launchers.local import kill_tree
from launchers.secrets import redact, redact_data, secret_values

from .errors import ConfigError, LazytuneError, OutputMissingError, PlanWriteError
from .plan import FileSpec
from .progress import plot_loss, read_trainer_log, summarize

if TYPE_CHECKING:
    from .plan import Plan

__version__ = "0.1.0"
MANIFEST = "lazytune_run.json"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "LOST"}


class CancelError(LazytuneError):
    """A run could not be cancelled from here (another host, scheduler refused)."""


class Trainer(Protocol):
    """What a run needs from its trainer (`backends.base.Finetune` is one; named here so run.py imports no backend)."""

    launcher: Launcher
    version_packages: tuple[str, ...]

    def python(self) -> str: ...
    def metrics(self, plan: Plan) -> dict[str, Any]: ...
    def check_outputs(self, plan: Plan) -> list[str]: ...
    def progress_log(self, plan: Plan) -> Path | None: ...



def read_package_versions(python: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of `names` in the interpreter `python` (reads metadata only, imports nothing heavy);
    raises OSError / SubprocessError / ValueError when the interpreter cannot be asked."""
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
    proc = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout)


def package_versions(python: str, names: tuple[str, ...]) -> dict[str, str | None]:
    """`read_package_versions`, with every version None when the interpreter cannot be asked."""
    try:
        return read_package_versions(python, names)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {n: None for n in names}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (FileSpec.write: temp file + rename, no leftover on a full disk), secrets removed."""
    clean = redact_data(json.loads(json.dumps(data, default=str)), secret_values())
    FileSpec(path, json.dumps(clean, indent=2) + "\n").write()


def controller_sigterm() -> str | None:
    """'cancel' when this process handles SIGTERM by cancelling its job (`lazytune train` does), so that
    `lazytune cancel` may send it; None otherwise (then only the job's own processes are stopped)."""
    handler = signal.getsignal(signal.SIGTERM)
    return "cancel" if getattr(handler, "__module__", "").startswith("lazytune.") else None


def loss_curve(log: Path, metrics: dict[str, Any], since: float = 0.0) -> Path | None:
    """The backend's own training_loss.png beside the log (LLaMA-Factory), else one drawn with matplotlib."""
    png = log.parent / "training_loss.png"
    if png.is_file() and png.stat().st_mtime >= since:
        return png
    try:
        return plot_loss(log, png)
    except ImportError:
        metrics["loss_curve_note"] = "matplotlib is not installed: no loss curve PNG (pip install matplotlib)"
    except Exception as exc:  # a plot is informative; never fail a run for it
        metrics["loss_curve_note"] = f"loss curve not drawn: {type(exc).__name__}: {exc}"
    return None


class Run:
    """A run. Live (`Run.start`, what `trainer.start()` returns): `wait()` returns the result path or raises
    `JobFailed`. Loaded back from its manifest (`Run.load(path)`, what `lazytune.runs.find_run` returns): state, logs,
    progress and cancel work from any process on the controller's host (SLURM runs: from anywhere)."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None, *, trainer: Trainer | None = None,
                 plan: Plan | None = None, job: Job | None = None, started: float | None = None,
                 versions: dict[str, Any] | None = None):  # fmt: skip
        self.path = Path(path)  # this run's own manifest
        self._data = data or {}
        self.trainer = trainer
        self.plan = plan
        self.job = job
        self.started = started if started is not None else self._data.get("started")
        self.ended: float | None = self._data.get("ended")
        self.versions = versions or self._data.get("versions") or {}
        self.problems: list[str] = []
        self.metrics: dict[str, Any] = dict(self._data.get("metrics") or {})
        if self._data.get("data"):  # the backend's data report is kept beside the metrics in the manifest
            self.metrics["data"] = self._data["data"]
        self.loss_curve: Path | None = None
        self._finalized = threading.Event()

    # -- making one ----------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, trainer: Trainer, plan: Plan) -> Run:
        """Submit `plan`'s steps through the trainer's launcher and record the run in its manifest."""
        python = trainer.python()
        versions = {
            "lazytune": __version__,
            "python": platform.python_version(),
            "backend_python": python,
            **package_versions(python, trainer.version_packages),
        }
        job = trainer.launcher.submit(plan.steps, name=f"lazytune-{plan.backend}-{plan.run_id}")
        run = cls(plan.run_dir / MANIFEST, trainer=trainer, plan=plan, job=job, started=time.time(), versions=versions)
        try:
            run.write_manifest()
        except OSError as exc:  # a job that no manifest records must not go on running unseen
            job.cancel()
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = "the disk is full" if full else exc.strerror or str(exc)
            raise PlanWriteError(exc.errno or 0, f"cannot write {plan.target.manifest}: {reason}") from exc
        job.add_done_callback(run._finish)
        return run

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        """A run as its manifest (`lazytune_run.json`) describes it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read run manifest {path}: {exc}") from exc
        if not isinstance(data, dict) or "run_id" not in data:
            raise ConfigError(f"{path} is not a lazytune run manifest")
        return cls(Path(path), data)

    @property
    def live(self) -> bool:
        """Whether this process started the run (it holds the job) rather than reading it back."""
        return self.job is not None

    @property
    def data(self) -> dict[str, Any]:
        """The manifest: as it is now for a live run, as last read for a loaded one."""
        return self.manifest() if self.live else self._data

    def reload(self) -> Run:
        """Read the manifest again (a loaded run; a live run is always current)."""
        if not self.live:
            self._data = Run.load(self.path).data
        return self

    # -- facts ---------------------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.plan.run_id if self.plan is not None else self._data["run_id"]

    @property
    def backend(self) -> str:
        return self.plan.backend if self.plan is not None else self._data.get("backend", "?")

    @property
    def target(self) -> Path:
        if self.plan is not None:
            return self.plan.target.root
        return Path(self._data.get("plan", {}).get("target", {}).get("root") or self.path.parent.parent.parent)

    @property
    def launcher_kind(self) -> str:
        if self.trainer is not None:
            return type(self.trainer.launcher).__name__.removesuffix("Launcher").lower()
        kind = self._data.get("launcher_kind")
        if kind:
            return kind
        return "slurm" if str(self._data.get("launcher", "")).startswith("launchers.slurm") else "local"

    def steps(self) -> list[dict[str, Any]]:
        return list(self.data.get("job", {}).get("steps", []))

    def controller_alive(self) -> bool | None:
        """Whether the process that started the run still runs (None: it ran on another host)."""
        if self.live:
            return True
        if self._data.get("host") != socket.gethostname():
            return None
        pid = self._data.get("controller_pid")
        try:
            proc = psutil.Process(int(pid))
            return proc.create_time() <= float(self._data.get("started") or time.time()) + 1 and proc.is_running()
        except (psutil.Error, TypeError, ValueError):
            return False

    @property
    def state(self) -> str:
        """The job's state (live); the manifest's (loaded), LOST when it says running but its controller is gone."""
        if self.live:
            return self.manifest_state() if self._finalized.is_set() else self.job.state.value
        state = self._data.get("state", "?")
        if state in FINISHED or self.controller_alive() is not False:
            return state
        if self.launcher_kind == "slurm":  # nobody waits for the job any more: ask the scheduler
            return self._slurm_state() or state
        return "LOST"

    def manifest_state(self) -> str:
        if self.job.state is JobState.COMPLETED and self.problems:
            return JobState.FAILED.value
        return self.job.state.value

    def _slurm_state(self) -> str | None:
        from launchers.slurm import SlurmError, map_state, query_job

        job_id = str(self._data.get("job", {}).get("id") or "")
        try:
            fields = query_job(job_id)
        except SlurmError:
            return None
        state = map_state(fields.get("JobState", "")) if fields else None
        return state.value if state is not None else None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def progress(self) -> dict[str, Any]:
        """{'step', 'total_steps', 'first_loss', 'final_loss'} read from the backend's own log (empty without one)."""
        log = self.data.get("progress_log")
        return summarize(read_trainer_log(Path(log))) if log else {}

    # -- logs ----------------------------------------------------------------------------------------------------
    def log_paths(self, step: str | None = None) -> list[tuple[str, Path]]:
        steps = [(s["name"], Path(s["log"])) for s in self.steps() if s.get("log")]
        if step is not None:
            steps = [s for s in steps if s[0] == step]
            if not steps:
                names = ", ".join(s["name"] for s in self.steps())
                raise ConfigError(f"run {self.run_id} has no step {step!r} (steps: {names})")
        return steps

    def logs(self, step: str | None = None, lines: int | None = None) -> str:
        """The step logs (secrets masked), each under a header; `lines`: only the last lines of each.
        A live run with no arguments: the job's own view of its logs."""
        if self.live and step is None and lines is None:
            return self.job.logs()
        parts = []
        for name, path in self.log_paths(step):
            if not path.exists():
                continue
            text = path.read_text("utf-8", "replace")
            if lines is not None:
                text = "\n".join(text.splitlines()[-lines:]) + "\n"
            parts.append(f"==> {name}: {path} <==\n{text}")
        return redact("".join(parts))

    # -- a live run ----------------------------------------------------------------------------------------------
    def _finish(self, job: Job) -> None:
        self.ended = time.time()
        try:
            self.metrics = self.trainer.metrics(self.plan)
        except Exception as exc:  # metrics are informative; never turn a good run into a crash
            self.metrics = {"error": f"{type(exc).__name__}: {exc}"}
        if job.state is JobState.COMPLETED:
            self.problems = self.trainer.check_outputs(self.plan)
        self._after_run()
        self.write_manifest()
        self._finalized.set()

    def _after_run(self) -> None:
        """The loss curve PNG beside the backend's log, the tensorboard folder, the upload of the merge for URL
        targets. Never raises: a missing plot is a note in the metrics; a failed upload is a problem (then FAILED).
        The log's numbers are in `metrics` already (`Finetune.metrics` summarizes it once)."""
        log = self.trainer.progress_log(self.plan)
        if log is not None and log.is_file():
            self.loss_curve = loss_curve(log, self.metrics, self.started)
        tensorboard = self.plan.target.lora / "runs"
        if tensorboard.is_dir():
            self.metrics["tensorboard"] = str(tensorboard)
        url = getattr(self.plan.target, "url", None)
        if url and self.job.state is JobState.COMPLETED and not self.problems:
            from .fetch import upload

            merge = self.plan.target.merge
            try:
                self.metrics["uploaded"] = upload(merge, f"{url.rstrip('/')}/{merge.name}")
            except Exception as exc:  # the outputs stay local; the run says it failed and why
                self.problems.append(f"upload of {merge} to {url} failed: {type(exc).__name__}: {exc}")

    def wait(self, timeout: float | None = None, progress: str | None = None) -> str:
        """Wait for the job; Ctrl-C cancels it. Returns the result folder; raises JobFailed / OutputMissingError.

        `progress`: 'bar' (tqdm), 'lines' (a line per 10 %), 'none', or None/'auto': none when LAZYTUNE_QUIET=1,
        a bar on a terminal, lines otherwise. Fed by the backend's own log (`trainer.progress_log(plan)`).
        """
        if not self.live:
            raise ConfigError(f"run {self.run_id} was loaded from {self.path}: only the process that started it "
                              "waits for it (poll `state` instead)")  # fmt: skip
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

    def manifest(self) -> dict[str, Any]:
        """The manifest of a live run, as it is now."""
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
            "launcher_kind": self.launcher_kind,
            "job": job,
            "result": str(self.plan.result) if self.plan.result else None,
            "metrics": {k: v for k, v in self.metrics.items() if k != "data"},
            # records given per file and examples trained (LLaMA-Factory's row accounting), when the backend counts
            "data": self.metrics.get("data"),
            "progress_log": str(self.trainer.progress_log(self.plan) or "") or None,
            "loss_curve": str(self.loss_curve) if self.loss_curve else None,
            "versions": self.versions,
            "plan": self.plan.to_dict(),
        }

    def write_manifest(self) -> None:
        data = self.manifest()
        write_json_atomic(self.plan.target.manifest, data)
        write_json_atomic(self.path, data)

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

    # -- cancel --------------------------------------------------------------------------------------------------
    def cancel(self, timeout: float = 30.0) -> str:
        """Stop the run and every process it started; the manifest then says CANCELLED. Returns what was done."""
        if self.live:
            self.job.cancel()
            return f"run {self.run_id} cancelled"
        if self._data.get("state") in FINISHED:
            return f"run {self.run_id} already {self._data['state']}"
        if self.launcher_kind == "slurm":
            return self._cancel_slurm(timeout)
        alive = self.controller_alive()
        if alive is None:
            raise CancelError(
                f"run {self.run_id} is controlled from host {self._data.get('host')} (pid "
                f"{self._data.get('controller_pid')}); run `lazytune cancel {self.run_id}` there"
            )
        pid = int(self._data["controller_pid"])
        if alive and self._data.get("controller_sigterm") == "cancel":
            os.kill(pid, signal.SIGTERM)  # `lazytune train` cancels its job and writes the manifest itself
            if self._wait_finished(timeout):
                return f"run {self.run_id} cancelled (controller pid {pid} stopped its job)"
        killed, deadline = 0, time.monotonic() + timeout
        while True:  # a controller may start the next step meanwhile: stop each one until the job gives up
            killed += self._kill_steps(pid if alive else None)
            if self._wait_finished(0.3) or not alive or time.monotonic() > deadline:
                break
        if self._data.get("state") == "COMPLETED":
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
        argvs = [s.get("argv") for s in self._data.get("plan", {}).get("steps", [])]
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
        from launchers.slurm import SlurmError, cancel_job

        job_id = self._data.get("job", {}).get("id")
        if not job_id:
            raise CancelError(f"run {self.run_id}: the manifest has no SLURM job id")
        try:
            cancel_job(str(job_id), timeout=60)
        except SlurmError as exc:
            raise CancelError(str(exc)) from None
        if not self._wait_finished(timeout if self.controller_alive() else 0):
            self.mark("CANCELLED", f"SLURM job {job_id} cancelled by `lazytune cancel`")
        return f"run {self.run_id}: SLURM job {job_id} cancelled"

    def _wait_finished(self, timeout: float) -> bool:
        """Wait until the manifest says the run ended (its controller writes it) or the controller is gone."""
        deadline = time.monotonic() + timeout
        while True:
            self.reload()
            if self._data.get("state") in FINISHED:
                return True
            if time.monotonic() >= deadline or self.controller_alive() is False:
                return False
            time.sleep(0.2)

    def mark(self, state: str, reason: str) -> None:
        """Record a final state in this run's manifest (and in the target's copy when it is this run's)."""
        self.reload()
        if self._data.get("state") == state:
            return
        self._data.update(state=state, reason=reason, ended=self._data.get("ended") or time.time())
        self._data.setdefault("job", {})["state"] = state
        write_json_atomic(self.path, self._data)
        top = self.target / MANIFEST
        try:
            if json.loads(top.read_text(encoding="utf-8")).get("run_id") == self.run_id:
                write_json_atomic(top, self._data)
        except (OSError, ValueError):
            pass

    def __repr__(self) -> str:
        return f"<Run {self.backend} {self.run_id} {self.state}>"
