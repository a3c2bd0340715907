"""Fault injection: a killed training process, Ctrl-C, concurrent runs, a full disk. Real processes throughout."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import launchers
from lazytune import JobFailed, PlanWriteError, TargetExistsError, finetune
from lazytune.backends.base import Finetune
from lazytune.plan import FileSpec

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def log_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def manifest(target: Path) -> dict:
    return json.loads((target / "lazytune_run.json").read_text())


def slow_dummy(model: Path, target: Path, **kw) -> Finetune:
    return finetune.dummy(model, target, launcher=launchers.local(sync=False, stream=False), sleep=0.2,
                          steps_per_epoch=200, **kw)  # fmt: skip


# -- SIGKILL mid-run ---------------------------------------------------------------------------------------------
def test_training_process_killed_mid_run(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    run = slow_dummy(tiny_folder_model, target).start(alpaca_file)
    log = target / "lazyllm_lora" / "trainer_log.jsonl"
    wait_for(lambda: log_lines(log) >= 2, what="two training steps")
    pid = run.job.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(JobFailed, match=r"step 'train' FAILED with exit code -9") as info:
        run.wait(timeout=60)
    assert info.value.step == "train"
    m = manifest(target)
    assert m["state"] == "FAILED"
    assert m["reason"] == "step 'train' killed by SIGKILL"
    assert [s["exit_code"] for s in m["job"]["steps"]] == [-9, None]  # merge never ran
    assert not (target / "lazyllm_merge").exists()
    assert log_lines(log) >= 2, "what training wrote before the kill must stay"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_merge_killed_leaves_the_adapter(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    """A failing merge step: the adapter trained by the first step is kept, the manifest names the merge step."""
    target = tmp_path / "target"
    with pytest.raises(JobFailed, match=r"step 'merge' FAILED with exit code 3"):
        finetune.dummy(tiny_folder_model, target, fail="merge")(alpaca_file)
    assert (target / "lazyllm_lora" / "adapter_config.json").is_file()
    m = manifest(target)
    assert m["state"] == "FAILED" and m["job"]["failed_step"] == "merge"


# -- Ctrl-C during a synchronous run -----------------------------------------------------------------------------
SYNC_SCRIPT = """
import sys
from lazytune import finetune
finetune.dummy(sys.argv[1], sys.argv[2], sleep=0.2, steps_per_epoch=300)(sys.argv[3])
"""


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def gone(proc: psutil.Process) -> bool:
    """True when the process no longer exists (a pid reused by another program counts as gone)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ctrl_c_leaves_no_process(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SYNC_SCRIPT, str(tiny_folder_model), str(target), str(alpaca_file)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        log = target / "lazyllm_lora" / "trainer_log.jsonl"
        wait_for(lambda: log_lines(log) >= 1 or proc.poll() is not None, what="training to start")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        trees = descendants(proc.pid)
        assert trees, "the training process should be a descendant of the script"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: SIGINT to the foreground group
        out, _ = proc.communicate(timeout=60)
        text = out.decode()
        assert "KeyboardInterrupt" in text, text
        for p in trees:
            wait_for(lambda p=p: gone(p), timeout=15, what=f"pid {p.pid} to end")
        m = manifest(target)
        assert m["state"] == "CANCELLED" and m["reason"] == "cancelled"
        assert not (target / "lazyllm_merge").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- concurrent runs ---------------------------------------------------------------------------------------------
def test_two_runs_on_the_same_data_file(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    before = alpaca_file.read_bytes()
    runs = []
    for name in ("a", "b"):
        trainer = finetune.dummy(tiny_folder_model, tmp_path / name, launcher=launchers.local(sync=False, stream=False),
                                 sleep=0.05, steps_per_epoch=6)  # fmt: skip
        runs.append(trainer.start(alpaca_file))
    results = [Path(r.wait(timeout=120)) for r in runs]
    assert results == [tmp_path / "a" / "lazyllm_merge", tmp_path / "b" / "lazyllm_merge"]
    assert runs[0].plan.run_dir != runs[1].plan.run_dir
    for name, run in zip(("a", "b"), runs, strict=True):
        m = manifest(tmp_path / name)
        assert m["state"] == "COMPLETED" and m["run_id"] == run.plan.run_id
        adapter = json.loads((tmp_path / name / "lazyllm_lora" / "adapter_config.json").read_text())
        assert adapter["records"] == {str(alpaca_file): 12}
    assert alpaca_file.read_bytes() == before


def test_second_run_into_a_busy_target_is_refused(tiny_folder_model: Path, alpaca_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    first = slow_dummy(tiny_folder_model, target).start(alpaca_file)
    try:
        with pytest.raises(TargetExistsError):
            finetune.dummy(tiny_folder_model, target).start(alpaca_file)
        assert first.state == "RUNNING"
    finally:
        first.cancel()
    assert manifest(target)["state"] == "CANCELLED"


LANDED = [n for n in ("llamafactory", "alpacalora", "flagembedding")
          if isinstance(getattr(finetune, n), type) and issubclass(getattr(finetune, n), Finetune)]  # fmt: skip


@pytest.mark.parametrize("backend", ["dummy", *LANDED])
def test_plans_on_the_same_data_share_no_file(backend: str, tmp_path: Path) -> None:
    """Two plans built at the same time from one data file write disjoint files (own run folders)."""
    from tests.bad_inputs.backends import PROFILES

    profile = PROFILES[backend]
    model = profile.model(tmp_path)
    data = profile.good_data(tmp_path / "data")
    plans = [profile.trainer(model, tmp_path / "target").plan(data) for _ in range(2)]
    files = [{str(f.path) for f in p.files} | {str(s.log) for s in p.steps} for p in plans]
    assert plans[0].run_id != plans[1].run_id
    assert not files[0] & files[1], f"shared files: {files[0] & files[1]}"
    for p in plans:
        assert all(str(p.run_dir) in f for f in {str(f.path) for f in p.files})


# -- disk full ---------------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 64 KiB tmpfs, filled up. Falls back to a fake full disk where mounting is not allowed."""
    mnt = tmp_path / "tiny-fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the fake-filesystem test covers it")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_writing_the_plan(full_disk: Path, tiny_folder_model: Path, alpaca_file: Path) -> None:
    target = full_disk / "target"
    me = psutil.Process()
    children = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(PlanWriteError, match=r"cannot write .*dummy_config\.json: the disk is full") as info:
        finetune.dummy(tiny_folder_model, target)(alpaca_file)
    assert info.value.errno == errno.ENOSPC
    assert not [p for p in target.rglob("*") if p.is_file()], "no half-written file is left behind"
    assert {p.pid for p in me.children(recursive=True)} == children, "no process may start after a failed write"


def test_disk_full_when_the_manifest_is_written(full_disk: Path, tiny_folder_model: Path, alpaca_file: Path) -> None:
    """Room for the plan's small files but not for the manifest: a clear error, and the started job is stopped."""
    os.truncate(full_disk / "filler", (full_disk / "filler").stat().st_size - 4096)  # one free page
    target = full_disk / "target"
    me = psutil.Process()
    children = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(PlanWriteError, match=r"cannot write .*(lazytune_run|dummy_config)\.json: the disk is full"):
        finetune.dummy(tiny_folder_model, target, sleep=0.5, steps_per_epoch=100)(alpaca_file)
    wait_for(lambda: {p.pid for p in me.children(recursive=True)} <= children, timeout=15, what="the job to stop")
    assert not list(target.rglob(".*.tmp")), "no half-written temp file is left behind"


def test_disk_full_fake_filesystem(monkeypatch: pytest.MonkeyPatch, tiny_folder_model: Path, alpaca_file: Path,
                                   tmp_path: Path) -> None:  # fmt: skip
    """The same check without mount rights: every write under the target fails with ENOSPC."""
    target = tmp_path / "target"
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lazytune.plan.os.fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(PlanWriteError, match=r"the disk is full"):
        finetune.dummy(tiny_folder_model, target)(alpaca_file)
    assert not [p for p in target.rglob("*") if p.is_file()]


def test_file_spec_write_is_atomic(tmp_path: Path) -> None:
    """An interrupted write keeps the previous content (temp file + rename)."""
    path = tmp_path / "config.yaml"
    FileSpec(path, "old: 1\n").write()
    with pytest.raises(UnicodeEncodeError):
        FileSpec(path, "new: \udcff\n").write()
    assert path.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_cancel_right_after_submit_stops_the_step(tmp_path: Path) -> None:
    """Cancelling while the step's process is still starting must stop it, not wait for it to finish."""
    for i in range(5):
        step = launchers.Step("sleep", [sys.executable, "-c", "import time; time.sleep(30)"], log=tmp_path / f"{i}.log")
        job = launchers.local(sync=False, stream=False).submit([step], name="cancel-race")
        started = time.monotonic()
        job.cancel()
        assert time.monotonic() - started < 15
        assert job.state is launchers.JobState.CANCELLED


# -- a real backend that writes checkpoints: kill it, then resume --------------------------------------------------
@pytest.mark.slow
def test_alpacalora_killed_then_resumed(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """SIGKILL after a few checkpoints: FAILED, no merge, checkpoints kept; resume_from_checkpoint=True finishes."""
    from tests.helpers.models import ml_python, tiny_llama

    if not LANDED.count("alpacalora"):
        pytest.skip("finetune.alpacalora is still a placeholder")
    model = tiny_llama(tmp_path_factory.getbasetemp() / "models", python=ml_python("alpacalora"))
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"Count to {i % 7}", "input": "", "output": " ".join("abc" * (i % 5))}
                                for i in range(30)]))  # fmt: skip
    target = tmp_path / "target"
    opts = dict(batch_size=2, micro_batch_size=2, num_epochs=1, val_set_size=0, save_steps=1, save_total_limit=3,
                logging_steps=1, warmup_steps=0, cutoff_len=256)  # fmt: skip
    trainer = finetune.alpacalora(model, target, launcher=launchers.local(sync=False, stream=False), **opts)
    run = trainer.start(data)
    lora = target / "lazyllm_lora"
    wait_for(lambda: (lora / "checkpoint-2" / "trainer_state.json").is_file() or run.job.state.finished,
             timeout=300, what="checkpoint-2")  # fmt: skip
    pid = run.job.pid
    assert pid is not None, f"training ended before it could be killed: {run.job.state}\n{run.logs()[-3000:]}"
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(JobFailed, match=r"step 'train' FAILED with exit code -9"):
        run.wait(timeout=120)
    m = manifest(target)
    assert m["state"] == "FAILED" and m["reason"] == "step 'train' killed by SIGKILL"
    assert not (target / "lazyllm_merge").exists()
    kept = sorted(int(p.name.split("-")[1]) for p in lora.glob("checkpoint-*"))
    assert kept and kept[-1] >= 2, f"the checkpoints written before the kill must stay: {kept}"

    resumed = finetune.alpacalora(model, target, overwrite=True, resume_from_checkpoint=True,
                                  launcher=launchers.local(stream=False), **opts)  # fmt: skip
    result = Path(resumed(data))
    assert result == target / "lazyllm_merge" and (result / "config.json").is_file()
    log = "".join(p.read_text() for p in target.glob("lazytune_runs/*/logs/train.log"))
    assert f"resuming from {lora}/checkpoint-" in log
    assert json.loads((lora / "train_result.json").read_text())["global_step"] == 15
    assert manifest(target)["state"] == "COMPLETED"


def test_alpacalora_resume_skips_a_half_written_checkpoint(tmp_path: Path) -> None:
    """A kill while the Trainer saves checkpoint-N leaves it without trainer_state.json (transformers writes straight
    into checkpoint-N, the state file last): resuming must use the newest *complete* checkpoint."""
    from lazytune.scripts.alpacalora_train import last_checkpoint

    for step, complete in ((1, True), (2, True), (3, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"w")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    found = last_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint-2"
