"""Run steps as local processes: one process group each, output teed to the step's log and the console."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence

import psutil

from . import gpus as gpu_info
from .base import Launcher, Topology
from .job import Job, JobState, Step
from .secrets import redact, secret_values
from .torchrun import torchrun_argv


def kill_tree(pid: int, grace: float = 5.0) -> None:
    """SIGTERM a process, its process group and all its descendants; SIGKILL what is left after `grace` seconds."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    try:
        os.killpg(pid, signal.SIGTERM)  # the group catches children that were already reparented
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    psutil.wait_procs(alive, timeout=grace)


class NoGpuWarning(RuntimeWarning):
    """GPUs were asked for but none is present: the job runs on CPU."""


class LocalJob(Job):
    """Steps run one after another in a runner thread; the interpreter waits for it at exit (non-daemon)."""

    def __init__(self, name: str, steps: Sequence[Step], argvs: Sequence[list[str]], env: Mapping[str, str],
                 stream: bool):
        super().__init__(name, steps, job_id=f"local-{os.getpid()}-{id(self):x}")
        self._argvs = list(argvs)
        self._env = dict(env)
        self._stream = stream
        self._proc: subprocess.Popen | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run_all, name=f"lazytune-job-{name}", daemon=False)

    @property
    def pid(self) -> int | None:
        """PID of the running step's process (None between steps or when finished)."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def start(self) -> LocalJob:
        self._thread.start()
        return self

    def _run_all(self) -> None:
        self._set_state(JobState.RUNNING)
        try:
            for step, argv, result in zip(self.steps, self._argvs, self.results, strict=True):
                if self._cancelled.is_set():
                    break
                result.started = time.time()
                result.exit_code = self._run_step(step, argv)
                result.ended = time.time()
                if self._cancelled.is_set():
                    break
                if result.exit_code != 0:
                    if result.exit_code < 0:
                        self.failure_reason = f"step {step.name!r} killed by {signal.Signals(-result.exit_code).name}"
                    else:
                        self.failure_reason = f"step {step.name!r} exited with {result.exit_code}"
                    self._set_state(JobState.FAILED)
                    return
        except Exception as exc:  # a step that cannot even start (missing executable, bad cwd)
            self.failure_reason = f"{type(exc).__name__}: {exc}"
            for result in self.results:
                if result.started is not None and result.ended is None:
                    result.ended, result.exit_code = time.time(), 127
            self._set_state(JobState.FAILED)
            return
        if self._cancelled.is_set():
            self.failure_reason = "cancelled"
            self._set_state(JobState.CANCELLED)
        else:
            self._set_state(JobState.COMPLETED)

    def _run_step(self, step: Step, argv: list[str]) -> int:
        step.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**self._env, **step.env}
        secrets = [v.encode() for v in secret_values(env)]
        with open(step.log, "ab") as log:
            log.write(redact(f"$ {subprocess.list2cmdline(argv)}\n", env).encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    argv, env=env, cwd=step.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            except OSError as exc:
                log.write(f"cannot start {argv[0]!r}: {exc}\n".encode())
                raise
            if self._cancelled.is_set():  # cancel() ran while the process was starting: it saw no process to stop
                kill_tree(self._proc.pid)
            assert self._proc.stdout is not None
            for line in iter(self._proc.stdout.readline, b""):
                for secret in secrets:
                    line = line.replace(secret, b"***")
                log.write(line)
                log.flush()
                if self._stream:
                    sys.stdout.write(line.decode("utf-8", "replace"))
                    sys.stdout.flush()
            return self._proc.wait()

    def _cancel(self) -> None:
        self._cancelled.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            kill_tree(proc.pid)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        if not self._state.finished:
            self.failure_reason = "cancelled"
            self._set_state(JobState.CANCELLED)


class LocalLauncher(Launcher):
    """Run on this machine. `ngpus` GPUs with the most free memory are chosen (CPU when there are none).

    `ngpus=0` runs on CPU even on a GPU host: the steps see no GPU (CUDA_VISIBLE_DEVICES=""). `nproc` processes
    per distributed step (default: one per chosen GPU, or 1 on CPU); more than one starts the step under torchrun
    (gloo on CPU). With GPUs, each process needs its own: more processes than chosen GPUs is an error.
    """

    def __init__(self, ngpus: int = 1, nproc: int | None = None, sync: bool = True, stream: bool = True,
                 env: Mapping[str, str] | None = None):
        if not isinstance(ngpus, int) or isinstance(ngpus, bool) or ngpus < 0:
            raise ValueError(f"ngpus must be a whole number >= 0, got {ngpus!r}")
        if nproc is not None and (not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1):
            raise ValueError(f"nproc must be a whole number >= 1, got {nproc!r}")
        self.ngpus = ngpus
        self.nproc = nproc
        self.sync = sync
        self.stream = stream
        self.env = dict(env or {})
        self._chosen: list[gpu_info.Gpu] | None = None

    def __repr__(self) -> str:
        return f"launchers.local(ngpus={self.ngpus}, nproc={self.nproc}, sync={self.sync})"

    def chosen_gpus(self) -> list[gpu_info.Gpu]:
        """The GPUs this launcher's jobs get (queried once per launcher)."""
        if self._chosen is None:
            visible = gpu_info.available()
            if not visible or self.ngpus == 0:
                self._chosen = []
                if self.ngpus:  # Python's default warning filter shows this once per process
                    warnings.warn("no GPU found: running on CPU", NoGpuWarning, stacklevel=2)
            else:
                self._chosen = gpu_info.pick(visible, self.ngpus)
        return self._chosen

    def topology(self) -> Topology:
        chosen = self.chosen_gpus()
        nproc = self.nproc or max(1, len(chosen))
        first = chosen[0] if chosen else None
        caps = [g.compute_cap for g in chosen]
        return Topology(
            nnodes=1, nproc_per_node=nproc, gpus_per_node=len(chosen),
            gpu_name=first.name if first else None, gpu_memory_gb=first.memory_total_gb if first else None,
            # the weakest chosen GPU decides (mixed cards: bf16 only when all have it); None if any is unknown
            compute_capability=min(caps) if chosen and None not in caps else None,  # type: ignore[type-var]
        )  # fmt: skip

    def problems(self) -> list[str]:
        chosen = self.chosen_gpus()
        if chosen and self.nproc is not None and self.nproc > len(chosen):
            return [f"nproc={self.nproc} but {len(chosen)} GPU(s) chosen (ngpus={self.ngpus}): each process needs "
                    f"its own GPU (one GPU per process); pass ngpus={self.nproc} or nproc={len(chosen)}"]
        return []

    def environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables the steps get: `environ` (default os.environ), this launcher's env, and the GPU choice."""
        environ = dict(os.environ if environ is None else environ)
        env = {**environ, **self.env}
        chosen = self.chosen_gpus()
        if chosen:
            env["CUDA_VISIBLE_DEVICES"] = gpu_info.cuda_visible_value(chosen, environ.get("CUDA_VISIBLE_DEVICES"))
            if env["CUDA_VISIBLE_DEVICES"].split(",")[0].isdigit():
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's indices; CUDA's default order is fastest-first
        else:  # CPU: the steps must not find a GPU (a "CPU" run on a GPU host would otherwise use cuda:0)
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def submit(self, steps: Sequence[Step], name: str, stream: bool | None = None) -> LocalJob:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        topo = self.topology()
        env = self.environment()
        argvs = []
        for step in steps:
            if step.runs_torchrun(topo.nproc_per_node):
                # a step may pin its rendezvous port through its env (MASTER_PORT); else a free one is picked
                argvs.append(torchrun_argv(step.argv, topo.nproc_per_node, master_port=step.env.get("MASTER_PORT")))
            else:
                argvs.append(list(step.argv))
        job = LocalJob(name, steps, argvs, env, self.stream if stream is None else stream)
        return job.start()
