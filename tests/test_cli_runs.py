"""`lazytune jobs`, `logs` and `cancel` as subprocesses, over real dummy runs (started by the CLI or from Python)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.test_cli import CLI, lazytune


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def manifest(target: Path) -> dict:
    return json.loads((target / "lazytune_run.json").read_text())


def started_steps(target: Path, n: int = 2) -> bool:
    log = target / "lazyllm_lora" / "trainer_log.jsonl"
    return log.exists() and len(log.read_text().splitlines()) >= n


def step_pids(controller: int) -> list[int]:
    children = psutil.Process(controller).children(recursive=True)
    return [p.pid for p in children if "dummy_train" in " ".join(p.cmdline())]


def gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


@pytest.fixture
def two_runs(tmp_path: Path, tiny_folder_model: Path) -> Path:
    """A root with a completed and a failed run."""
    root = tmp_path / "root"
    assert lazytune("train", "dummy", "--base", tiny_folder_model, "--target", "ok", "-q", cwd=root.mkdir() or root,
                    env={"LAZYTUNE_TRAIN_TARGET_ROOT": str(root)}).returncode == 0  # fmt: skip
    assert lazytune("train", "dummy", "--base", tiny_folder_model, "--target", root / "deep" / "bad", "fail=merge",
                    "-q").returncode == 1  # fmt: skip
    return root


def test_jobs_lists_runs_with_state_progress_and_loss(two_runs: Path) -> None:
    out = lazytune("jobs", "--root", two_runs)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["RUN", "BACKEND", "STATE", "STEP", "LOSS"]
    assert "COMPLETED" in lines[1] and "3/3" in lines[1] and str(two_runs / "ok") in lines[1]
    assert "FAILED" in lines[2] and str(two_runs / "deep" / "bad") in lines[2]
    runs = json.loads(lazytune("jobs", "--root", two_runs, "--json").stdout)
    assert [r["state"] for r in runs] == ["COMPLETED", "FAILED"]
    assert lazytune("jobs", "--root", two_runs, "--running").stdout.count("\n") == 1  # header only
    env_root = lazytune("jobs", env={"LAZYTUNE_TRAIN_TARGET_ROOT": str(two_runs)})
    assert env_root.stdout == out.stdout


def test_logs_by_run_id_target_and_step(two_runs: Path) -> None:
    run_id = manifest(two_runs / "deep" / "bad")["run_id"]
    by_id = lazytune("logs", run_id[:17], "--root", two_runs)
    assert by_id.returncode == 0, by_id.stderr
    assert "==> train:" in by_id.stdout and "==> merge:" in by_id.stdout
    assert "dummy merge: failing on purpose" in by_id.stdout
    by_target = lazytune("logs", two_runs / "deep" / "bad", "--step", "train", "-n", "2")
    assert by_target.stdout.splitlines()[1:] == ["step 3/3 loss=0.6667", "dummy train: done"]
    missing = lazytune("logs", "nope", "--root", two_runs)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr
    bad_step = lazytune("logs", two_runs / "ok", "--step", "eval")
    assert bad_step.returncode == 2 and "train, merge" in bad_step.stderr


def test_logs_follow_until_the_run_ends(tmp_path: Path, tiny_folder_model: Path) -> None:
    target = tmp_path / "t"
    train = subprocess.Popen([*CLI, "train", "dummy", "--base", str(tiny_folder_model), "--target", str(target),
                              "sleep=0.2", "steps_per_epoch=8", "-q"])  # fmt: skip
    try:
        wait_for(lambda: (target / "lazytune_run.json").exists(), what="the manifest")
        out = lazytune("logs", target, "-f", "--step", "train")
        assert out.returncode == 0
        assert "step 1/8" in out.stdout and "step 8/8" in out.stdout and "dummy train: done" in out.stdout
    finally:
        assert train.wait(60) == 0


def test_cancel_a_cli_run_stops_the_process_tree(tmp_path: Path, tiny_folder_model: Path) -> None:
    target = tmp_path / "t"
    train = subprocess.Popen([*CLI, "train", "dummy", "--base", str(tiny_folder_model), "--target", str(target),
                              "sleep=0.5", "steps_per_epoch=100", "-q"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: started_steps(target), what="training to start")
    pids = step_pids(train.pid)
    assert pids
    out = lazytune("cancel", manifest(target)["run_id"], "--root", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "cancelled" in out.stdout
    assert train.wait(30) == 130
    assert "cancelled" in train.stderr.read()
    wait_for(lambda: gone(pids), 10, "the step processes to end")
    assert manifest(target)["state"] == "CANCELLED"
    again = lazytune("cancel", target)
    assert again.returncode == 0 and "already CANCELLED" in again.stdout


SCRIPT = """
import sys
from lazytune import finetune, launchers
trainer = finetune.dummy(sys.argv[1], sys.argv[2], launcher=launchers.local(ngpus=0, stream=False),
                         sleep=0.5, steps_per_epoch=100)
trainer()
"""


def test_cancel_a_python_run_stops_its_steps_and_marks_it(tmp_path: Path, tiny_folder_model: Path) -> None:
    target = tmp_path / "t"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tiny_folder_model), str(target)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: started_steps(target), what="training to start")
    assert manifest(target)["controller_sigterm"] is None  # a Python controller is never sent SIGTERM
    pids = step_pids(proc.pid)
    out = lazytune("cancel", target)
    assert out.returncode == 0, out.stderr
    assert proc.wait(30) == 1 and "JobFailed" in proc.stderr.read()  # the script learns its job was stopped
    wait_for(lambda: gone(pids), 10, "the step processes to end")
    assert manifest(target)["state"] == "CANCELLED"


def test_lost_run_is_shown_and_its_orphaned_steps_are_cancelled(tmp_path: Path, tiny_folder_model: Path) -> None:
    target = tmp_path / "t"
    script = textwrap.dedent(SCRIPT).replace("sleep=0.5", "sleep=4")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tiny_folder_model), str(target)])
    wait_for(lambda: started_steps(target, 1), what="training to start")
    pids = step_pids(proc.pid)
    # The controller dies without a word; its step lives on in its own session (until it next writes to the pipe
    # its dead parent held: 4 s of quiet here, like a trainer between two log lines).
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    try:
        assert not gone(pids)
        jobs = lazytune("jobs", "--root", tmp_path)
        assert "LOST" in jobs.stdout
        out = lazytune("cancel", target)
        assert out.returncode == 0 and "1 process tree" in out.stdout
        wait_for(lambda: gone(pids), 10, "the orphaned step to end")
        assert manifest(target)["state"] == "CANCELLED"
    finally:
        for pid in pids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_cancel_a_run_of_another_host_says_where(tmp_path: Path, tiny_folder_model: Path) -> None:
    target = tmp_path / "t"
    assert lazytune("train", "dummy", "--base", tiny_folder_model, "--target", target, "-q").returncode == 0
    data = manifest(target)
    data.update(state="RUNNING", host="elsewhere")
    per_run = target / "lazytune_runs" / data["run_id"] / "lazytune_run.json"
    per_run.write_text(json.dumps(data))
    out = lazytune("cancel", per_run)
    assert out.returncode == 1 and "host elsewhere" in out.stderr and "Traceback" not in out.stderr
