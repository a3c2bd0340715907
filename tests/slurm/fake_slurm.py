"""The one fake of sbatch / scontrol / squeue / scancel / sacct used by lazytune's fast unit tests.

With FAKE_SLURM_HANG=1 every command hangs, as SLURM's clients do while no controller answers (they retry).

It really runs the batch script (with bash, as SLURM would), so the generated script is exercised too; only the
scheduling is fake: one "node" named fake1, jobs start at once unless submitted with --hold. State lives in
$FAKE_SLURM_DIR (one JSON file per job). `install(bin_dir)` writes the command wrappers.

The real cluster tests (tests/test_slurm_cluster.py) are the proof; this fake only keeps the unit tests fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "scontrol", "squeue", "scancel", "sacct", "sinfo")


def install(bin_dir: Path) -> Path:
    """Write executable wrappers for the fake commands into `bin_dir` (put it first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        wrapper.chmod(0o755)
    return bin_dir


def _dir() -> Path:
    d = Path(os.environ["FAKE_SLURM_DIR"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def _load(job_id: str) -> dict | None:
    try:
        return json.loads((_dir() / f"{job_id}.json").read_text())
    except (OSError, ValueError):
        return None


def _save(job: dict) -> None:
    path = _dir() / f"{job['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(job))
    tmp.replace(path)


def sbatch(args: list[str]) -> int:
    opts: dict[str, str] = {}
    flags = set()
    script = args[-1]
    for a in args[:-1]:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            opts[k] = v
        else:
            flags.add(a)
    if opts.get("gres", "").startswith("gpu:") and int(opts["gres"][4:]) > 2:
        print("sbatch: error: Batch job submission failed: Requested node configuration is not available",
              file=sys.stderr)  # fmt: skip
        return 1
    counter = _dir() / "counter"
    job_id = str(int(counter.read_text()) + 1 if counter.exists() else 1)
    counter.write_text(job_id)
    job = {"id": job_id, "name": opts.get("job-name", ""), "state": "PENDING", "reason": "None", "exit": "0:0",
           "script": script, "output": opts.get("output", "slurm.out").replace("%%", "%"),
           "export": opts.get("export", "ALL"), "pid": None}  # fmt: skip
    if "--hold" in flags:
        job["reason"] = "JobHeldUser"
        _save(job)
    else:
        _save(job)
        subprocess.Popen([sys.executable, __file__, "_run", job_id], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    print(job_id if "--parsable" in flags else f"Submitted batch job {job_id}")
    return 0


def _run(job_id: str) -> int:
    """Runs in the background: execute the batch script like slurmstepd, record the end state."""
    job = _load(job_id)
    assert job is not None
    names = job["export"].split(",")
    if "ALL" in names:
        env = dict(os.environ)
    else:
        env = {k: os.environ[k] for k in names if k in os.environ and k != "NONE"}
    env.update({"SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": "fake1", "SLURM_NNODES": "1",
                "SLURM_JOB_NAME": job["name"]})  # fmt: skip
    with open(job["output"], "ab") as out:
        proc = subprocess.Popen(["bash", job["script"]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        job.update(state="RUNNING", pid=proc.pid)
        _save(job)
        rc = proc.wait()
    job = _load(job_id) or job
    if job["state"] == "CANCELLED":
        return 0
    if rc == 0:
        job.update(state="COMPLETED", exit="0:0")
    elif rc < 0:
        job.update(state="CANCELLED", exit=f"0:{-rc}")
    else:
        job.update(state="FAILED", exit=f"{rc}:0", reason="NonZeroExitCode")
    _save(job)
    return 0


def scontrol(args: list[str]) -> int:
    if args[:1] == ["ping"]:
        print("Slurmctld(primary) at fake1 is UP")
        return 0
    job_id = args[-1]
    job = _load(job_id) if args[:2] == ["show", "job"] else None
    if job is None or job.get("purged"):
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        return 1
    print(f"JobId={job['id']} JobName={job['name']} UserId=root(0) JobState={job['state']} Reason={job['reason']} "
          f"Dependency=(null) ExitCode={job['exit']} NodeList=fake1 Command={job['script']} "
          f"StdOut={job['output']}")  # fmt: skip
    return 0


def squeue(args: list[str]) -> int:
    for path in sorted(_dir().glob("*.json")):
        job = json.loads(path.read_text())
        if job["state"] in ("PENDING", "RUNNING"):
            print(job["id"])
    return 0


def scancel(args: list[str]) -> int:
    job = _load(args[-1])
    if job is None:
        print(f"scancel: error: Kill job error on job id {args[-1]}: Invalid job id specified", file=sys.stderr)
        return 1
    if job["state"] in ("PENDING", "RUNNING"):
        pid = job.get("pid")
        job.update(state="CANCELLED", reason="None", exit="0:15")
        _save(job)
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            time.sleep(0.05)
    return 0


def sacct(args: list[str]) -> int:
    """With FAKE_SLURM_ACCOUNTING=1, answers `sacct -n -X -P -j ID -o JobID,State,ExitCode,Reason,NodeList`."""
    if os.environ.get("FAKE_SLURM_ACCOUNTING") != "1":
        print("Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    job = _load(args[args.index("-j") + 1])
    if job is not None:
        print(f"{job['id']}|{job['state']}|{job['exit']}|{job['reason']}|fake1")
    return 0


def sinfo(args: list[str]) -> int:
    """`sinfo -h -o %G`: the gres of the fake node ($FAKE_SLURM_GRES, default none)."""
    print(os.environ.get("FAKE_SLURM_GRES") or "(null)")
    return 0


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if os.environ.get("FAKE_SLURM_HANG") == "1" and cmd != "_run":
        time.sleep(3600)
    if cmd == "_run":
        return _run(args[0])
    commands = {"sbatch": sbatch, "scontrol": scontrol, "squeue": squeue, "scancel": scancel, "sacct": sacct,
                "sinfo": sinfo}  # fmt: skip
    return commands[cmd](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
