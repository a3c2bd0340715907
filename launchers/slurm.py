"""Submit a pipeline of steps to SLURM as one generated batch script (`sbatch`), and follow it as a `Job`.

    import launchers
    job = launchers.slurm(partition="debug", nnodes=2, ngpus=8, time="2:00:00").run(steps, name="sft")

The batch script is the one place where shell appears: every argv item is quoted with `shlex`, the script runs with
`set -euo pipefail`, steps run in order and the first non-zero exit ends the job (a merge never runs after a failed
train). Distributed steps on several nodes start one torchrun per node through `srun`, meeting at a c10d rendezvous
on the first node of the allocation. The job's state comes from `scontrol show job` (`sacct` when the controller has
forgotten the job and accounting exists) and from a small status file the script writes per step.

Environment: the job gets an explicit allow-list of the submitter's variables (`DEFAULT_ENV_ALLOW`, plus `env_allow`)
through `sbatch --export=NAMES`. Variables whose names look like credentials are never written into the script: they
travel only through sbatch's own environment, and only when named explicitly (`env=`, a step's env, or `env_allow`).
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time as _time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from .base import Launcher, Topology
from .job import Job, JobState, Step, tail
from .secrets import is_secret, redact
from .slurm_script import (
    DEFAULT_ENV_ALLOW,
    DEFAULT_ENV_ALLOW_PREFIXES,
    Resources,
    _check_env_name,
    _job_name,
    render_batch_script,
    sbatch_argv,
)

# SLURM job states (scontrol / sacct / squeue long names) -> JobState.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING, "REQUEUED": JobState.PENDING, "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "CONFIGURING": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING, "SIGNALING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING, "SPECIAL_EXIT": JobState.FAILED,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "BOOT_FAIL": JobState.FAILED, "DEADLINE": JobState.FAILED,
    "PREEMPTED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED, "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT, "NODE_FAIL": JobState.NODE_FAIL, "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
}  # fmt: skip

# What slurmstepd / the kernel write to the job's output when memory ran out.
_OOM_MESSAGE = re.compile(r"Exceeded job memory limit|exceeded memory limit|oom-kill|Out Of Memory", re.IGNORECASE)

# ---------------------------------------------------------------------------------------------------- scheduler I/O
PLANNING_TIMEOUT = 3.0  # seconds a scheduler query made while planning may take


def parse_scontrol_job(text: str) -> dict[str, str]:
    """`scontrol show job -o ID` output -> {key: value} (values may contain spaces only in the last keys)."""
    fields: dict[str, str] = {}
    # Keys are CamelCase words followed by '='; a value runs until the next " Key=".
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s[A-Za-z][A-Za-z0-9_:/]*=|\s*$)", text.strip()):
        fields.setdefault(m.group(1), m.group(2))
    return fields


def parse_exit_code(text: str | None) -> tuple[int | None, int | None]:
    """SLURM's 'exit:signal' -> (exit code, signal)."""
    if not text:
        return None, None
    m = re.fullmatch(r"\s*(\d+)(?::(\d+))?\s*", text)
    if not m:
        return None, None
    return int(m.group(1)), int(m.group(2)) if m.group(2) is not None else None


def map_state(raw: str) -> JobState | None:
    """'CANCELLED by 0' / 'RUNNING' / 'OUT_OF_MEMORY+' -> JobState (None when unknown)."""
    word = raw.strip().split(" ")[0].rstrip("+").upper() if raw.strip() else ""
    return SLURM_STATES.get(word)


def parse_gres(text: str) -> tuple[str | None, int | None]:
    """(type, count per node) of the first GPU in SLURM gres text (`sinfo -o %G`, one line per node group):
    'gpu:a100:8(S:0-1),tmpfs:10' -> ('a100', 8), 'gpu:4' -> (None, 4); (None, None) without GPUs."""
    for item in re.split(r"(?:,|\s)+(?![^()]*\))", text.strip()):
        m = re.match(r"gpu(?::([A-Za-z][\w.-]*))?(?::(\d+))?(?=[(:]|$)", item.strip())
        if m:
            return m.group(1), int(m.group(2)) if m.group(2) else None
    return None, None


def parse_gres_gpu_name(sinfo_gres: str) -> str | None:
    """The GPU model in `sinfo -o %G` output ('gpu:a100:8(S:0-1),tmpfs:10' -> 'A100'); None for untyped 'gpu:8'."""
    gpu_type, _ = parse_gres(sinfo_gres)
    return gpu_type.replace("_", " ").upper() if gpu_type else None


def parse_probe(output: str) -> tuple[str, float | None, float | None] | None:
    """(name, memory GiB, compute capability) from `nvidia-smi --query-gpu=name,memory.total,compute_cap` output."""
    for line in output.splitlines():
        *name, total, cap = [p.strip() for p in line.split(",")] if line.count(",") >= 2 else ["", "", ""]
        if not name or not ",".join(name):
            continue
        try:
            memory = round(float(total) / 1024, 1)
        except ValueError:
            memory = None
        try:
            capability = float(cap)
        except ValueError:
            capability = None
        return ", ".join(name), memory, capability
    return None


class SlurmError(RuntimeError):
    """sbatch refused the job, or a SLURM command could not be run."""


def _run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, env=dict(env) if env is not None else None,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} not found: is this a SLURM login node? ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{shlex.join(argv)} did not answer within {timeout} s") from exc


class SlurmWarning(UserWarning):
    """A SLURM query made while planning failed or timed out; planning went on without its answer."""


def partition_gres(partition: str | None, timeout: float = PLANNING_TIMEOUT) -> str:
    """`sinfo -o %G` of a partition (default: the cluster's); '' where sinfo is missing, fails or does not answer
    within `timeout` seconds (a SlurmWarning says which: with no controller, sinfo retries for ~10 s)."""
    if shutil.which("sinfo") is None:
        return ""
    argv = ["sinfo", "-h", "-o", "%G"] + ([f"--partition={partition}"] if partition else [])
    try:
        proc = _run(argv, timeout=timeout)
    except SlurmError as exc:
        warnings.warn(f"{exc} (is slurmctld up?): the partition's GPU type is unknown", SlurmWarning, stacklevel=2)
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def controller_problem(timeout: float = PLANNING_TIMEOUT) -> str | None:
    """None when SLURM's controller answers `scontrol ping` within `timeout` seconds, else what went wrong."""
    try:
        proc = _run(["scontrol", "ping"], timeout=timeout)
    except SlurmError as exc:
        return str(exc)
    if proc.returncode != 0 or "UP" not in proc.stdout:
        return f"`scontrol ping` says: {(proc.stdout + proc.stderr).strip() or f'exit code {proc.returncode}'}"
    return None


def query_job(job_id: str, timeout: float = 30) -> dict[str, str] | None:
    """A job's fields from `scontrol show job` (then `sacct`, for jobs the controller forgot); None when unknown.
    Raises SlurmError when the commands are missing or do not answer within `timeout`."""
    proc = _run(["scontrol", "show", "job", "-o", job_id], timeout=timeout)
    if proc.returncode == 0 and proc.stdout.strip():
        return parse_scontrol_job(proc.stdout.splitlines()[0])
    if shutil.which("sacct"):
        proc = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,ExitCode,Reason,NodeList"],
                    timeout=timeout)  # fmt: skip
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            parts = line.split("|")
            if len(parts) >= 5 and parts[0] == job_id:
                return {"JobState": parts[1], "ExitCode": parts[2], "Reason": parts[3], "NodeList": parts[4]}
    return None


def cancel_job(job_id: str, timeout: float = 30) -> None:
    """`scancel JOB_ID`; SlurmError when SLURM refuses (the message has its stderr)."""
    proc = _run(["scancel", job_id], timeout=timeout)
    if proc.returncode != 0:
        raise SlurmError(f"scancel {job_id} failed: {proc.stderr.strip() or proc.returncode}")


# ---------------------------------------------------------------------------------------------------- job
class SlurmJob(Job):
    """A submitted batch job. State from `scontrol show job` (then `sacct`, then the script's status file)."""

    poll_seconds = 1.0
    min_query_interval = 0.5  # seconds between two scheduler queries, however often `state` is read
    vanish_grace = 30.0  # seconds a job may be unknown to every source before it counts as lost
    unreachable_grace = 300.0  # seconds scontrol may fail (timeouts) before polling raises SlurmError

    def __init__(self, name: str, steps: Sequence[Step], job_id: str, folder: Path, secrets: Mapping[str, str]):
        super().__init__(name, steps, job_id=job_id)
        self.folder = folder
        self.script = folder / "job.sh"
        self.output = folder / "slurm.out"
        self.status_file = folder / "steps.tsv"
        self.slurm_state: str | None = None
        self.reason: str | None = None
        self.nodes: str | None = None
        self.scheduler_exit_code: tuple[int | None, int | None] = (None, None)
        self._secrets = dict(secrets)
        self._last_query = 0.0
        self._unknown_since: float | None = None
        self._error_since: float | None = None
        self._poll_lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def add_done_callback(self, fn: Callable[[Job], None]) -> None:
        """Call `fn(job)` once the job has finished. A daemon thread polls the scheduler until then, so callbacks
        run without anyone waiting (as a local job's runner thread does)."""
        super().add_done_callback(fn)
        if self._watcher is None and not self._state.finished:
            self._watcher = threading.Thread(target=self._watch, name=f"lazytune-slurm-{self.id}", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while True:
            try:
                if self.state.finished:
                    return
            except SlurmError:
                pass  # the controller did not answer this time; try again
            _time.sleep(self.poll_seconds)

    def summary(self) -> dict:
        """The base summary plus what SLURM says (state, reason, nodes) and where the batch files are."""
        data = super().summary()
        code, sig = self.scheduler_exit_code
        data["slurm"] = {
            "state": self.slurm_state, "reason": self.reason, "nodes": self.nodes,
            "exit_code": None if code is None else f"{code}:{sig or 0}",
            "script": str(self.script), "output": str(self.output),
        }  # fmt: skip
        return data

    # -- polling ----------------------------------------------------------------------------------------------
    def _query(self) -> dict[str, str] | None:
        return query_job(self.id)

    def _read_status(self) -> None:
        try:
            text = self.status_file.read_text()
        except OSError:
            return
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) >= len(self.results):
                continue
            r = self.results[int(parts[1])]
            when = float(parts[3]) if re.fullmatch(r"[0-9.]+", parts[3]) else None
            if parts[0] == "start":
                r.started = when
            elif parts[0] == "end" and parts[2].lstrip("-").isdigit():
                r.ended, r.exit_code = when, int(parts[2])

    def _poll(self) -> None:
        # One query at a time (a caller's wait() and the callback watcher may poll together); others skip.
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            self._poll_locked()
        finally:
            self._poll_lock.release()

    def _poll_locked(self) -> None:
        now = _time.monotonic()
        if now - self._last_query < self.min_query_interval:
            return
        self._last_query = now
        try:
            info = self._query()
        except SlurmError:
            # A busy or restarting controller: keep the last state, unless it stays unreachable too long.
            self._error_since = self._error_since or now
            if now - self._error_since > self.unreachable_grace:
                raise
            return
        self._error_since = None
        self._read_status()
        if info is None:
            self._settle_unknown(now)
            return
        self._unknown_since = None
        self.slurm_state = info.get("JobState")
        self.reason = info.get("Reason")
        self.nodes = info.get("NodeList") or self.nodes
        self.scheduler_exit_code = parse_exit_code(info.get("ExitCode"))
        state = map_state(self.slurm_state or "")
        if state is None:
            return  # a state this code does not know yet: keep the last one
        if state is JobState.COMPLETED and any(r.exit_code not in (None, 0) for r in self.results):
            state = JobState.FAILED  # cannot happen with our script, but never report success over a failed step
        if state in (JobState.FAILED, JobState.CANCELLED) and self._killed_for_memory():
            state = JobState.OUT_OF_MEMORY  # memory enforced without cgroups: SLURM says FAILED, its log says why
        if state.finished:
            self.failure_reason = self._describe_failure(state)
        self._set_state(state)

    def _killed_for_memory(self) -> bool:
        """Whether slurmstepd wrote that it killed the job for its memory (jobacct_gather's OverMemoryKill)."""
        return bool(_OOM_MESSAGE.search(tail(self.output, 60)))

    def _settle_unknown(self, now: float) -> None:
        """The scheduler no longer knows the job (no accounting, past MinJobAge): decide from the status file."""
        if all(r.exit_code == 0 for r in self.results):
            self._set_state(JobState.COMPLETED)
            return
        if any(r.exit_code not in (None, 0) for r in self.results):
            self.failure_reason = self._describe_failure(JobState.FAILED)
            self._set_state(JobState.FAILED)
            return
        if self._unknown_since is None:
            self._unknown_since = now
        elif now - self._unknown_since > self.vanish_grace:
            self.failure_reason = f"job {self.id} is no longer known to SLURM and its steps did not all finish"
            self._set_state(JobState.FAILED)

    def _describe_failure(self, state: JobState) -> str | None:
        """Like the local launcher's reason ("step 'train' exited with 3"), plus what SLURM says."""
        if state is JobState.COMPLETED:
            return None
        step = self.failed_step
        code = next((r.exit_code for r in self.results if r.exit_code not in (None, 0)), None)
        sched_code, sig = self.scheduler_exit_code
        if step and code is not None:
            head = f"step {step!r} exited with {code}"
        elif step:
            head = f"step {step!r} ended by SLURM ({state.value})"
        else:
            head = f"job {state.value}"
        details = [f"slurm job {self.id} {self.slurm_state or state.value}"]
        if sched_code is not None:
            details.append(f"ExitCode={sched_code}:{sig or 0}")
        if self.reason and self.reason not in ("None", "(null)"):
            details.append(f"reason {self.reason}")
        return f"{head} ({', '.join(details)})"

    @property
    def exit_code(self) -> int | None:
        code = super().exit_code
        if code is None and self._state.finished:
            return self.scheduler_exit_code[0] if self.scheduler_exit_code[0] else None
        return code

    # -- cancel -----------------------------------------------------------------------------------------------------
    def _cancel(self, timeout: float = 60.0) -> None:
        cancel_job(self.id)
        deadline = _time.monotonic() + timeout
        while _time.monotonic() < deadline:
            self._last_query = 0.0
            self._poll()
            if self._state.finished:
                return
            _time.sleep(0.25)
        raise SlurmError(f"job {self.id} still {self.slurm_state} {timeout} s after scancel")

    # -- logs -------------------------------------------------------------------------------------------------------
    def log_of(self, step: str | None) -> Path | None:
        """A step's log; for a failure outside any step (batch script, scheduler), the job's sbatch output."""
        if step is None and self._state.finished and self._state is not JobState.COMPLETED:
            return self.output
        return super().log_of(step)

    def log_tail(self, step: str | None = None, lines: int = 40) -> str:
        text = tail(self.log_of(step), lines)
        return redact(redact(text, self._secrets))

    def batch_output(self) -> str:
        """The batch script's own output (sbatch --output): lazytune's step markers and SLURM's messages."""
        return redact(redact(tail(self.output, 200), self._secrets))


# ---------------------------------------------------------------------------------------------------- launcher
class SlurmLauncher(Launcher):
    """Run steps as one SLURM batch job.

    `ngpus` GPUs per node (`--gres=gpu:N`), `nnodes` nodes, `ntasks_per_node` processes per node for distributed
    steps (default: one per GPU, or 1). `partition`: None is the cluster's default partition. `time` is a SLURM
    time ('2:00:00', '1-0') or minutes. `sbatch_args` are extra sbatch flags, passed as given. `folder` holds one
    sub-folder per submission (script, sbatch output, step status);
    default: a `slurm` folder beside the first step's log. `gpu_type` asks for GPUs of that gres type
    (`--gres=gpu:a100:N`) and tells plans what they are; without it, the GPU model comes from the partition's typed
    gres (`sinfo`), else, when the partition's gres is untyped ('gpu:8'), from one node asked with
    `srun ... nvidia-smi` (within `probe_seconds`; 0: never ask).
    """

    def __init__(
        self,
        partition: str | None = None,
        nnodes: int = 1,
        ngpus: int = 0,
        ntasks_per_node: int | None = None,
        time: str | int | None = None,
        sync: bool = True,
        cpus_per_task: int | None = None,
        mem: str | None = None,
        sbatch_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        env_allow: Sequence[str] = (),
        env_allow_prefixes: Sequence[str] = (),
        folder: str | os.PathLike | None = None,
        nproc: int | None = None,
        poll_seconds: float | None = None,
        gpu_type: str | None = None,
        probe_seconds: int = 30,
    ):
        for label, value, low in (("nnodes", nnodes, 1), ("ngpus", ngpus, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{label} must be a whole number >= {low}, got {value!r}")
        if nproc is not None and ntasks_per_node is not None and nproc != ntasks_per_node:
            raise ValueError("give ntasks_per_node or its alias nproc, not both")
        ntasks = ntasks_per_node if ntasks_per_node is not None else nproc
        if ntasks is not None and (not isinstance(ntasks, int) or isinstance(ntasks, bool) or ntasks < 1):
            raise ValueError(f"ntasks_per_node must be a whole number >= 1, got {ntasks!r}")
        if isinstance(time, int) and not isinstance(time, bool):
            time = str(time)  # SLURM reads a bare number as minutes
        if time is not None and (not isinstance(time, str) or not re.fullmatch(r"[0-9:-]+|UNLIMITED|INFINITE", time)):
            raise ValueError(f"time must be minutes or a SLURM time like '2:00:00' or '1-12', got {time!r}")
        if isinstance(sbatch_args, str):
            raise TypeError("sbatch_args must be a list of flags, not a string")
        for k in [*(env or {}), *env_allow]:
            _check_env_name(k)
        if gpu_type is not None and (not isinstance(gpu_type, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", gpu_type)):
            raise ValueError(f"gpu_type must be a SLURM gres type such as 'a100', got {gpu_type!r}")
        self.resources = Resources(
            nnodes=nnodes, ntasks_per_node=ntasks or max(1, ngpus), ngpus=ngpus, partition=partition, time=time,
            cpus_per_task=cpus_per_task, mem=mem, gpu_type=gpu_type,
        )  # fmt: skip
        self.probe_seconds = probe_seconds
        self.sync = sync
        self.sbatch_args = [str(a) for a in sbatch_args]
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.env_allow = tuple(env_allow)
        self.env_allow_prefixes = (*DEFAULT_ENV_ALLOW_PREFIXES, *env_allow_prefixes)
        self.folder = Path(folder) if folder is not None else None
        self.poll_seconds = poll_seconds
        self._gpu_name: str | None = None
        self._gpu_memory_gb: float | None = None
        self._compute_cap: float | None = None

    def __repr__(self) -> str:
        r = self.resources
        return (f"launchers.slurm(partition={r.partition!r}, nnodes={r.nnodes}, ngpus={r.ngpus}, "
                f"ntasks_per_node={r.ntasks_per_node}, time={r.time!r}, sync={self.sync})")  # fmt: skip

    def topology(self) -> Topology:
        """Nodes, processes and GPUs of a job; the GPU model from the partition's typed gres ('gpu:a100:8')."""
        r = self.resources
        if r.ngpus and self._gpu_name is None:
            self._gpu_name = r.gpu_type or self._query_gpu_name() or ""
        return Topology(nnodes=r.nnodes, nproc_per_node=r.ntasks_per_node, gpus_per_node=r.ngpus,
                        gpu_name=self._gpu_name or None, gpu_memory_gb=self._gpu_memory_gb,
                        compute_capability=self._compute_cap)  # fmt: skip

    def _query_gpu_name(self) -> str | None:
        """The GPU model from the partition's typed gres; for untyped gres ('gpu:8') one node is asked, which also
        gives the memory and compute capability. Only when sinfo answered: without a controller, no 30 s srun wait."""
        gres = partition_gres(self.resources.partition)
        name = parse_gres_gpu_name(gres)
        if name or not gres.strip() or self.probe_seconds <= 0:
            return name
        found = self._probe_node()
        if found is None:
            return None
        name, self._gpu_memory_gb, self._compute_cap = found
        return name

    def problems(self) -> list[str]:
        r = self.resources
        if r.ngpus and r.ntasks_per_node > r.ngpus:
            return [f"ntasks_per_node={r.ntasks_per_node} but ngpus={r.ngpus} per node: each process needs its own "
                    f"GPU (one GPU per process); pass ngpus={r.ntasks_per_node} or ntasks_per_node={r.ngpus}"]
        return []

    def probe_argv(self) -> list[str]:
        """`srun` running nvidia-smi on one GPU of one node of the partition (given up when not started at once)."""
        argv = ["srun", "--nodes=1", "--ntasks=1", "--gres=gpu:1", f"--immediate={self.probe_seconds}", "--time=1"]
        if self.resources.partition:
            argv.append(f"--partition={self.resources.partition}")
        return [*argv, "nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"]

    def _probe_node(self) -> tuple[str, float | None, float | None] | None:
        try:
            proc = _run(self.probe_argv(), timeout=self.probe_seconds + 30)
        except SlurmError:
            return None
        return parse_probe(proc.stdout) if proc.returncode == 0 else None

    def export_names(self, environ: Mapping[str, str], extra: Iterable[str] = ()) -> list[str]:
        """Names of the submitter's variables the job gets: the allow-list, `env_allow`, and `extra` (exact)."""
        names = {
            k for k in environ
            if k in DEFAULT_ENV_ALLOW or (k.startswith(self.env_allow_prefixes) and not is_secret(k))
        }  # fmt: skip
        names |= {k for k in self.env_allow if k in environ} | set(extra)
        return sorted(names)

    def prepare(
        self, steps: Sequence[Step], name: str, folder: Path, environ: Mapping[str, str] | None = None
    ) -> tuple[str, list[str], dict[str, str]]:
        """(script text, sbatch argv, sbatch process environment) for `steps`; writes nothing, runs nothing."""
        environ = dict(os.environ if environ is None else environ)
        secrets: dict[str, str] = {k: v for k, v in self.env.items() if is_secret(k)}
        for s in steps:
            for k, v in s.env.items():
                if is_secret(k):
                    if k in secrets and secrets[k] != v:
                        raise ValueError(
                            f"steps give different values to the secret variable {k}; a batch job "
                            "carries one value per secret (through its environment, never its script)"
                        )
                    secrets[k] = v
        public = {k: v for k, v in self.env.items() if not is_secret(k)}
        export = self.export_names(environ, secrets)
        submit_env = {**environ, **secrets}
        argv = sbatch_argv(folder / "job.sh", name, folder / "slurm.out", self.resources, export, self.sbatch_args)
        secret_names = {*secrets, *(k for k in self.env_allow if is_secret(k) and k in environ)}
        script = render_batch_script(
            steps, name, folder / "steps.tsv", self.resources, public, argv[1:-1], secret_names
        )
        for k, v in {**secrets, **{k: v for k, v in environ.items() if is_secret(k)}}.items():
            if len(v) >= 8 and v in script:
                raise ValueError(
                    f"the value of secret variable {k} appears in the batch script (in an argument?); "
                    "pass it through the environment instead"
                )
        return script, argv, submit_env

    def _new_folder(self, steps: Sequence[Step], name: str) -> Path:
        base = self.folder if self.folder is not None else (steps[0].log.parent / "slurm")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = base / f"{_job_name(name)}-{stamp}-{random.randrange(16**6):06x}"
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    def submit(self, steps: Sequence[Step], name: str) -> SlurmJob:
        if not steps:
            raise ValueError("nothing to submit: no steps")
        folder = self._new_folder(steps, name)
        script, argv, submit_env = self.prepare(steps, name, folder)
        (folder / "job.sh").write_text(script)
        (folder / "job.sh").chmod(0o700)
        proc = _run(argv, env=submit_env)
        secrets = {k: v for k, v in submit_env.items() if is_secret(k)}
        if proc.returncode != 0:
            msg = redact(proc.stderr.strip() or proc.stdout.strip(), secrets)
            raise SlurmError(
                f"sbatch refused job {name!r} (exit {proc.returncode}): {msg}\n  script: {folder / 'job.sh'}"
            )
        job_id = proc.stdout.strip().splitlines()[-1].split(";")[0].strip() if proc.stdout.strip() else ""
        if not job_id.isdigit() and not re.fullmatch(r"\d+_\d+", job_id):
            raise SlurmError(f"cannot read a job id from sbatch --parsable output {proc.stdout!r}")
        (folder / "job_id").write_text(job_id + "\n")
        job = SlurmJob(name, steps, job_id, folder, secrets)
        if self.poll_seconds is not None:
            job.poll_seconds = self.poll_seconds
        print(f"lazytune: submitted {name!r} as SLURM job {job_id} ({folder})", file=sys.stderr)
        return job
