"""The local launcher with real processes: ordering, failure, cancel, argv passed untouched."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

import launchers
from launchers import JobFailed, JobState, Step

PY = sys.executable


def step(tmp_path: Path, name: str, code: str, *args: str, **kw) -> Step:
    return Step(name, [PY, "-c", code, *args], log=tmp_path / "logs" / f"{name}.log", **kw)


def test_steps_run_in_order_and_log(tmp_path: Path) -> None:
    marker = tmp_path / "order.txt"
    steps = [
        step(tmp_path, "one", "import sys; open(sys.argv[1], 'a').write('1'); print('hello from one')", str(marker)),
        step(tmp_path, "two", "import sys; open(sys.argv[1], 'a').write('2')", str(marker)),
    ]
    job = launchers.local(stream=False).run(steps, name="order")
    assert job.state is JobState.COMPLETED
    assert marker.read_text() == "12"
    assert "hello from one" in (tmp_path / "logs" / "one.log").read_text()
    assert [r.exit_code for r in job.results] == [0, 0]


def test_failing_step_stops_pipeline_with_log_tail(tmp_path: Path) -> None:
    marker = tmp_path / "never.txt"
    steps = [
        step(tmp_path, "train", "import sys; print('line before failing'); sys.exit(3)"),
        step(tmp_path, "merge", "import sys; open(sys.argv[1], 'w').write('x')", str(marker)),
    ]
    with pytest.raises(JobFailed) as info:
        launchers.local(stream=False).run(steps, name="fails")
    err = info.value
    assert err.step == "train" and err.exit_code == 3
    assert "line before failing" in err.log_tail and "line before failing" in str(err)
    assert err.job.state is JobState.FAILED
    assert not marker.exists(), "a step after a failed one must never run"
    assert err.job.results[1].started is None


def test_missing_executable_is_a_failed_job(tmp_path: Path) -> None:
    bad = Step("train", ["/nonexistent/python", "x"], log=tmp_path / "t.log")
    with pytest.raises(JobFailed) as info:
        launchers.local(stream=False).run([bad], name="missing")
    assert "cannot start" in info.value.log_tail


def test_cancel_async_job_kills_whole_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "open(sys.argv[1], 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    job = launchers.local(sync=False, stream=False).run(
        [step(tmp_path, "sleepy", code, str(pidfile)), step(tmp_path, "after", "print('must not run')")], "cancel-me"
    )
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    parent_pid, child_pid = job.pid, int(pidfile.read_text())
    assert job.state is JobState.RUNNING
    job.cancel()
    assert job.state is JobState.CANCELLED
    for pid in (parent_pid, child_pid):
        assert pid is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert job.results[1].started is None
    with pytest.raises(JobFailed):
        job.wait()


def test_async_wait_logs_and_callback(tmp_path: Path) -> None:
    seen = []
    job = launchers.local(sync=False, stream=False).run([step(tmp_path, "s", "print('done here')")], "async")
    job.add_done_callback(lambda j: seen.append(j.state))
    job.wait(timeout=30)
    assert seen == [JobState.COMPLETED]
    assert "done here" in job.logs()
    job.add_done_callback(lambda j: seen.append("late"))  # already finished: called at once
    assert seen[-1] == "late"


WEIRD = ["has space", "quote'd \"x\"", "semi;colon", "$(touch PWNED)", "back`tick`", "new\nline"]


@pytest.mark.parametrize("weird", WEIRD)
def test_argv_reaches_process_untouched(tmp_path: Path, weird: str) -> None:
    folder = tmp_path / weird
    folder.mkdir()
    out = folder / "out.txt"
    code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    launchers.local(stream=False).run([Step("w", [PY, "-c", code, str(out), weird], log=folder / "w.log")], "weird")
    assert out.read_text() == weird
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_step_rejects_shell_string(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="shell string"):
        Step("x", "python -c 'print(1)'", log=tmp_path / "x.log")  # type: ignore[arg-type]


def test_secrets_masked_in_log_and_description(tmp_path: Path) -> None:
    secret = "s3cr3t-value-123"
    s = step(tmp_path, "leak", "import os; print('token is', os.environ['HF_TOKEN'])", env={"HF_TOKEN": secret})
    assert secret not in s.describe()
    launchers.local(stream=False).run([s], "secret")
    assert secret not in s.log.read_text() and "***" in s.log.read_text()


def test_env_and_cwd_passed(tmp_path: Path) -> None:
    s = step(tmp_path, "envcwd", "import os; print(os.environ['LT_X'], os.getcwd())", env={"LT_X": "xyz"}, cwd=tmp_path)
    launchers.local(stream=False).run([s], "envcwd")
    text = s.log.read_text()
    assert "xyz" in text and str(tmp_path) in text


def test_sigkill_reported(tmp_path: Path) -> None:
    s = step(tmp_path, "killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(JobFailed) as info:
        launchers.local(stream=False).run([s], "killed")
    assert info.value.exit_code == -9
    assert "SIGKILL" in info.value.job.failure_reason


def test_cpu_topology_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launchers.gpus, "query_nvidia_smi", lambda timeout=20: [])
    topo = launchers.local(ngpus=2, nproc=2).topology()
    assert topo.device == "cpu" and topo.gpus_per_node == 0 and topo.nproc_per_node == 2 and topo.world_size == 2


def test_distributed_step_wrapped_in_torchrun(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from launchers.torchrun import torchrun_argv

    argv = torchrun_argv([PY, "-m", "pkg.mod", "--x", "1"], nproc_per_node=2, master_port=19999)
    assert argv[:3] == [PY, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in argv and "--master_port=19999" in argv
    assert argv[-4:] == ["-m", "pkg.mod", "--x", "1"]


@pytest.mark.skipif(os.environ.get("CI_NO_GPU_CHECK") == "1", reason="explicitly disabled")
def test_real_nvidia_smi_if_present() -> None:
    """On a GPU machine this parses the real nvidia-smi; elsewhere it checks the absence is handled."""
    gpus = launchers.gpus.query_nvidia_smi()
    for g in gpus:
        assert g.memory_total_mib > 0 and g.uuid.startswith(("GPU-", "MIG-"))
