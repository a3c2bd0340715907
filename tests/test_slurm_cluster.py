"""launchers.slurm against a real SLURM cluster (tests/slurm/start.sh: munge + slurmctld + 2 slurmd on localhost).

The session fixture uses the cluster that `sinfo` reaches ($SLURM_CONF, else the one start.sh writes), starts it with
tests/slurm/start.sh when slurm-wlm is installed but not running, and skips with the reason when neither works.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from launchers import JobFailed, JobState, Step
from launchers.remote import remote
from launchers.slurm import SlurmError, SlurmJob, SlurmLauncher, parse_scontrol_job

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("LAZYTUNE_SLURM_DIR", "/tmp/lazytune-slurm"))
PARTITION = "debug"


def _sinfo_ok() -> tuple[bool, str]:
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %t"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return False, "sinfo not found (slurm-client is not installed)"
    except subprocess.TimeoutExpired:
        return False, "sinfo did not answer in 20 s"
    if proc.returncode != 0 or not proc.stdout.strip():
        return False, (proc.stderr or proc.stdout).strip() or f"sinfo exited {proc.returncode}"
    return True, proc.stdout.strip()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """The partition to submit to, on a running cluster; skips with the reason when none can be reached/started."""
    saved = os.environ.get("SLURM_CONF")
    if not saved and (STATE / "etc" / "slurm.conf").exists():
        os.environ["SLURM_CONF"] = str(STATE / "etc" / "slurm.conf")
    ok, why = _sinfo_ok()
    started = False
    if not ok:
        if not any(Path(d, "slurmctld").exists() for d in ("/usr/sbin", "/usr/local/sbin")):
            pytest.skip(f"no SLURM cluster reachable ({why}) and slurm-wlm is not installed: "
                        "run tests/slurm/start.sh (as root) to install and start the test cluster")  # fmt: skip
        env = {**os.environ, "LAZYTUNE_SLURM_NO_INSTALL": "1", "LAZYTUNE_SLURM_DIR": str(STATE)}
        proc = subprocess.run(["bash", str(REPO / "tests/slurm/start.sh")], capture_output=True, text=True, env=env,
                              timeout=180)  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"the test SLURM cluster could not start: {proc.stderr[-2000:]}")
        os.environ["SLURM_CONF"] = str(STATE / "etc" / "slurm.conf")
        started = True
        ok, why = _sinfo_ok()
        if not ok:
            pytest.skip(f"started the test cluster but sinfo fails: {why}")
    partitions = {line.split()[0].rstrip("*") for line in why.splitlines()}
    partition = PARTITION if PARTITION in partitions else sorted(partitions)[0]
    yield partition
    if started:
        env = {**os.environ, "LAZYTUNE_SLURM_DIR": str(STATE)}
        subprocess.run(["bash", str(REPO / "tests/slurm/stop.sh")], env=env, capture_output=True, timeout=120)
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    return parse_scontrol_job(out)


def launcher(partition: str, **kw) -> SlurmLauncher:
    return SlurmLauncher(partition=partition, time=kw.pop("time", "10"), poll_seconds=0.2, **kw)


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def procs_with(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# A 1-minute job that outlives its limit is submitted first, so its ~70 s run overlaps the other tests.
@pytest.fixture(scope="module")
def timeout_job(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> SlurmJob:
    folder = tmp_path_factory.mktemp("timeout")
    steps = [Step("forever", ["sleep", "600"], log=folder / "forever.log"),
             Step("after", ["touch", str(folder / "after-ran")], log=folder / "after.log")]  # fmt: skip
    return launcher(slurm_cluster, time="1", sync=False).run(steps, name="lazytune-test-timeout")


def test_timeout_job_submitted(timeout_job: SlurmJob) -> None:
    assert timeout_job.id.isdigit()


def test_pipeline_completes(slurm_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LT_NOT_ALLOWED", "leaked")
    folder = tmp_path / 'it\'s a "run"; $(touch pwned) x'
    steps = [
        Step("where", ["bash", "-c", 'echo "node=$SLURMD_NODENAME job=$SLURM_JOB_ID allowed=${LT_NOT_ALLOWED:-unset}"'],
             log=folder / "logs" / "where.log"),
        Step("python", py("import sys; print('py', sys.executable); open(sys.argv[1], 'w').write('ok')",
                          str(folder / "out.txt")), log=folder / "logs" / "python.log", cwd=folder),
    ]  # fmt: skip
    t0 = time.monotonic()
    job = launcher(slurm_cluster).run(steps, name="lazytune-test-ok")
    elapsed = time.monotonic() - t0
    assert job.state is JobState.COMPLETED and [r.exit_code for r in job.results] == [0, 0]
    assert (folder / "out.txt").read_text() == "ok" and not (folder / "pwned").exists()
    where = (folder / "logs" / "where.log").read_text()
    assert "node=ltnode" in where or "node=" in where
    assert "allowed=unset" in where, "a variable outside the allow-list reached the job"
    assert f"py {sys.executable}" in (folder / "logs" / "python.log").read_text()
    info = scontrol(job.id)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0"
    print(f"round trip of a 2-step job through SLURM: {elapsed:.2f} s")
    assert elapsed < 60


def test_failed_step_stops_pipeline_with_exit_code_and_log_tail(slurm_cluster: str, tmp_path: Path) -> None:
    marker = tmp_path / "merge-ran"
    steps = [
        Step("prepare", ["echo", "prepared"], log=tmp_path / "prepare.log"),
        Step(
            "train", ["bash", "-c", "echo step 1; echo 'CUDA error: out of luck' >&2; exit 3"], log=tmp_path / "t.log"
        ),
        Step("merge", ["touch", str(marker)], log=tmp_path / "merge.log"),
    ]
    with pytest.raises(JobFailed) as info:
        launcher(slurm_cluster).run(steps, name="lazytune-test-fail")
    err = info.value
    assert err.job.state is JobState.FAILED and err.step == "train" and err.exit_code == 3
    assert "out of luck" in err.log_tail and "out of luck" in str(err)
    assert not marker.exists() and err.job.results[2].started is None
    assert "exited with 3" in (err.job.failure_reason or "")
    sched = scontrol(err.job.id)
    assert sched["JobState"] == "FAILED" and sched["ExitCode"] == "3:0"
    assert "step train failed with exit code 3" in err.job.batch_output()


def test_cancel_long_job_kills_its_processes(slurm_cluster: str, tmp_path: Path) -> None:
    marker = f"lazytune-cancel-{uuid.uuid4().hex}"
    step = Step("long", py("import time, sys; print('started', flush=True); time.sleep(600)", marker),
                log=tmp_path / "long.log")  # fmt: skip
    job = launcher(slurm_cluster, sync=False).run([step], name="lazytune-test-cancel")
    wait_for(lambda: job.state is JobState.RUNNING and procs_with(marker), 60, "the job's process")
    assert procs_with(marker)
    job.cancel()
    assert job.state is JobState.CANCELLED
    wait_for(lambda: not procs_with(marker), 30, "the cancelled job's processes to end")
    assert scontrol(job.id)["JobState"] == "CANCELLED" and job.failed_step == "long"


def test_impossible_request_pending_then_cancelled(slurm_cluster: str, tmp_path: Path) -> None:
    # More time than the partition's MaxTime (1 h): accepted, but never scheduled (Reason=PartitionTimeLimit).
    step = Step("never", ["true"], log=tmp_path / "never.log")
    job = launcher(slurm_cluster, time="2:00:00", sync=False).run([step], name="lazytune-test-pending")
    wait_for(lambda: job.state is JobState.PENDING and job.reason == "PartitionTimeLimit", 30, "the pending reason")
    time.sleep(2)
    assert job.state is JobState.PENDING, (job.slurm_state, job.reason)
    job.cancel()
    assert job.state is JobState.CANCELLED and not step.log.exists()
    # A request no node can ever satisfy is refused by sbatch at once, with SLURM's own message.
    with pytest.raises(SlurmError, match="node configuration is not available"):
        launcher(slurm_cluster, ngpus=3).run([step], name="lazytune-test-toomany")


def test_ctrl_c_while_waiting_cancels_the_job(slurm_cluster: str, tmp_path: Path) -> None:
    code = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from launchers import Step
from launchers.slurm import SlurmLauncher
launcher = SlurmLauncher(partition={slurm_cluster!r}, time="10", poll_seconds=0.2)
job = launcher.submit([Step("long", ["sleep", "600"], log={str(tmp_path / "l.log")!r})], "ctrlc")
print(job.id, flush=True)
try:
    job.wait()
except KeyboardInterrupt:
    print("interrupted", job.state.value, flush=True)
    sys.exit(130)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    job_id = proc.stdout.readline().strip()
    assert job_id.isdigit(), proc.stderr.read() if proc.stderr else ""
    wait_for(lambda: scontrol(job_id)["JobState"] == "RUNNING", 60, "the job to run")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted CANCELLED" in out
    assert scontrol(job_id)["JobState"] == "CANCELLED"


def test_fake_gpus_and_secret_environment(slurm_cluster: str, tmp_path: Path) -> None:
    secret = f"hf_{uuid.uuid4().hex}"
    step = Step("env", py("import os; print('cvd', os.environ.get('CUDA_VISIBLE_DEVICES')); "
                          "print('token', os.environ['HF_TOKEN']); print('len', len(os.environ['HF_TOKEN']))"),
                log=tmp_path / "env.log", env={"HF_TOKEN": secret})  # fmt: skip
    job = launcher(slurm_cluster, ngpus=2).run([step], name="lazytune-test-env")
    log = step.log.read_text()
    assert "cvd 0,1" in log and "token ***" in log and f"len {len(secret)}" in log and secret not in log
    for path in job.folder.iterdir():
        assert secret not in path.read_text(errors="replace"), path
    assert secret not in job.log_tail("env")


def test_multi_node_torchrun_rendezvous(slurm_cluster: str, tmp_path: Path) -> None:
    from tests.helpers.models import ml_python

    python = ml_python("alpacalora")  # a backend environment's Python has torch (the project's venv need not)
    script = tmp_path / "allreduce.py"
    script.write_text(
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank() + 1.0]); dist.all_reduce(t)\n"
        # one write() per line: two ranks on a node share torchrun's stdout, and print() may split its output
        'os.write(1, f"rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item():.0f} '
        "node={os.environ.get('SLURMD_NODENAME')} master={os.environ.get('MASTER_ADDR')} "
        "cvd={os.environ.get('CUDA_VISIBLE_DEVICES')}\\n\".encode())\n"
        "dist.destroy_process_group()\n"
    )
    steps = [
        Step("allreduce", [python, str(script)], log=tmp_path / "dist.log", distributed=True),
        Step("after", ["echo", "merge-like step on the first node"], log=tmp_path / "after.log"),
    ]
    # one fake GPU per node: srun hands each node's torchrun its own gres (CUDA_VISIBLE_DEVICES); gloo trains on CPU
    job = launcher(slurm_cluster, nnodes=2, ntasks_per_node=2, ngpus=1).run(steps, name="lazytune-test-2nodes")
    log = (tmp_path / "dist.log").read_text()
    ranks = re.findall(r"rank=(\d+) world=(\d+) sum=(\d+) node=(\S+) master=\S+ cvd=(\d*)", log)
    assert sorted(r[0] for r in ranks) == ["0", "1", "2", "3"], log
    assert all(r[1:3] == ("4", "10") and r[4] == "0" for r in ranks), log
    assert {r[3] for r in ranks} == {"ltnode1", "ltnode2"}, log
    assert job.state is JobState.COMPLETED


def test_out_of_memory(slurm_cluster: str, tmp_path: Path) -> None:
    # The test cluster enforces each job's memory (jobacct_gather/linux + OverMemoryKill): 100 MB, then 400 MB used.
    marker = tmp_path / "after"
    steps = [Step("hog", py("import time; x = bytearray(400 * 2**20); time.sleep(30)"), log=tmp_path / "hog.log"),
             Step("after", ["touch", str(marker)], log=tmp_path / "after.log")]  # fmt: skip
    with pytest.raises(JobFailed) as info:
        launcher(slurm_cluster, mem="100M").run(steps, name="lazytune-test-oom")
    job = info.value.job
    assert job.state is JobState.OUT_OF_MEMORY and info.value.step == "hog", (job.slurm_state, job.batch_output())
    assert "memory" in job.batch_output().lower() and not marker.exists()


def test_node_fail(slurm_cluster: str, tmp_path: Path) -> None:
    """A node going down under a running job: NODE_FAIL (on the spare node only, so other jobs are untouched)."""
    if "spare" not in subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split():
        pytest.skip("the cluster has no `spare` partition (tests/slurm/start.sh with LAZYTUNE_SLURM_SPARE=1)")
    marker = f"lazytune-nodefail-{uuid.uuid4().hex}"
    step = Step("long", py("import time, sys; time.sleep(600)", marker), log=tmp_path / "long.log")
    spare = SlurmLauncher(partition="spare", time="5", poll_seconds=0.2, sync=False, sbatch_args=["--no-requeue"])
    job = spare.run([step], name="lazytune-test-nodefail")
    try:
        wait_for(lambda: job.state is JobState.RUNNING and procs_with(marker), 60, "the job to run")
        subprocess.run(["scontrol", "update", "NodeName=ltspare", "State=DOWN", "Reason=lazytune-test"], check=True)
        with pytest.raises(JobFailed):
            job.wait(timeout=60)
        assert job.state is JobState.NODE_FAIL and job.reason == "NodeDown" and job.failed_step == "long"
        wait_for(lambda: not procs_with(marker), 30, "the job's processes to end")
    finally:
        state = subprocess.run(["sinfo", "-h", "-n", "ltspare", "-o", "%t"], capture_output=True, text=True).stdout
        if "idle" not in state:
            subprocess.run(["scontrol", "update", "NodeName=ltspare", "State=RESUME"], capture_output=True)


def test_remote_resolves_to_slurm_when_present(slurm_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYTUNE_DEFAULT_LAUNCHER", "slurm")
    assert isinstance(remote(partition=slurm_cluster), SlurmLauncher)


def test_finetune_dummy_through_slurm(slurm_cluster: str, tmp_path: Path, tiny_folder_model: Path,
                                      alpaca_file: Path) -> None:  # fmt: skip
    from lazytune import finetune

    target = tmp_path / "out dir"
    t0 = time.monotonic()
    result = finetune.dummy(tiny_folder_model, target, launcher=launcher(slurm_cluster))(alpaca_file)
    elapsed = time.monotonic() - t0
    assert Path(result) == target / "lazyllm_merge" and (target / "lazyllm_merge" / "tokenizer.json").is_file()
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED" and [s["exit_code"] for s in manifest["job"]["steps"]] == [0, 0]
    assert manifest["job"]["id"].isdigit()
    print(f"finetune.dummy through SLURM: {elapsed:.2f} s")

    with pytest.raises(JobFailed) as info:
        finetune.dummy(tiny_folder_model, tmp_path / "bad", fail="train", launcher=launcher(slurm_cluster))(alpaca_file)
    assert info.value.step == "train" and info.value.exit_code == 3
    assert "failing on purpose" in info.value.log_tail
    assert not (tmp_path / "bad" / "lazyllm_merge").exists()


def test_async_run_finishes_by_itself(slurm_cluster: str, tmp_path: Path, tiny_folder_model: Path,
                                      alpaca_file: Path) -> None:  # fmt: skip
    """sync=False: nobody waits, yet the run's manifest is completed (the job's watcher runs the callbacks)."""
    from lazytune import finetune

    target = tmp_path / "async"
    run = finetune.dummy(tiny_folder_model, target, launcher=launcher(slurm_cluster, sync=False))(alpaca_file)
    manifest = target / "lazytune_run.json"
    wait_for(lambda: json.loads(manifest.read_text()).get("state") == "COMPLETED", 60, "the manifest to say COMPLETED")
    data = json.loads(manifest.read_text())
    assert data["job"]["slurm"]["state"] == "COMPLETED" and data["job"]["slurm"]["exit_code"] == "0:0"
    assert run.wait() == str(target / "lazyllm_merge")


def _real_backend_or_skip(name: str):
    from lazytune import finetune

    factory = getattr(finetune, name)
    try:
        factory("/nonexistent-model-for-probe", "/nonexistent-target-for-probe")
    except NotImplementedError as exc:
        pytest.skip(f"finetune.{name} is not implemented yet: {exc}")
    except Exception:  # noqa: BLE001 - any other error (missing model) means the backend exists
        pass
    return factory


@pytest.mark.slow
@pytest.mark.parametrize("nnodes", [1, 2], ids=["1node", "2nodes"])
def test_real_llamafactory_finetune_through_slurm(
    slurm_cluster: str, tmp_path: Path, alpaca_file: Path, tmp_path_factory: pytest.TempPathFactory, nnodes: int
) -> None:
    """A real tiny LLaMA-Factory LoRA fine-tune + merge, submitted through SLURM (2 nodes: torchrun over srun)."""
    factory = _real_backend_or_skip("llamafactory")
    from tests.helpers.models import ml_python, tiny_llama

    model = tiny_llama(tmp_path_factory.getbasetemp() / "models", ml_python("llamafactory"))
    target = tmp_path / "lf out"
    t0 = time.monotonic()
    trainer = factory(model, target, launcher=launcher(slurm_cluster, time="30", nnodes=nnodes),
                      num_train_epochs=1, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                      logging_steps=1, cutoff_len=64, template="default")  # fmt: skip
    result = Path(trainer(alpaca_file))
    elapsed = time.monotonic() - t0
    assert result == target / "lazyllm_merge" and (result / "config.json").is_file()
    assert list(result.glob("*.safetensors")), sorted(p.name for p in result.iterdir())
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED" and manifest["job"]["id"].isdigit()
    train_log = (Path(manifest["plan"]["run_dir"]) / "logs" / "train.log").read_text()
    if nnodes == 2:
        assert "--nnodes=2" in train_log and "srun" in train_log and "world size: 2" in train_log, train_log[-3000:]
    print(f"LLaMA-Factory fine-tune + merge through SLURM on {nnodes} node(s): {elapsed:.1f} s")


@pytest.mark.slow
def test_real_alpacalora_across_two_nodes(slurm_cluster: str, tmp_path: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:  # fmt: skip
    """finetune.alpacalora's plan, unchanged, trains with DDP across 2 SLURM nodes and merges on the first."""
    factory = _real_backend_or_skip("alpacalora")
    from tests.helpers.alpaca import write_alpaca
    from tests.helpers.models import ml_python, tiny_llama

    model = tiny_llama(tmp_path_factory.getbasetemp() / "models", ml_python("alpacalora"))
    data = write_alpaca(tmp_path / "alpaca.json")
    target = tmp_path / "alpaca out"
    t0 = time.monotonic()
    trainer = factory(model, target, launcher=launcher(slurm_cluster, time="30", nnodes=2), num_epochs=1,
                      batch_size=4, micro_batch_size=2, val_set_size=2, learning_rate=5e-3, warmup_steps=0,
                      logging_steps=1)  # fmt: skip
    result = Path(trainer(data))
    elapsed = time.monotonic() - t0
    assert result == target / "lazyllm_merge" and list(result.glob("*.safetensors"))
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED"
    train_log = (Path(manifest["plan"]["run_dir"]) / "logs" / "train.log").read_text()
    assert "--nnodes=2" in train_log and "srun" in train_log, train_log[-3000:]
    print(f"alpacalora fine-tune + merge through SLURM on 2 nodes: {elapsed:.1f} s")


def test_timeout_state(timeout_job: SlurmJob) -> None:
    # Runs last in this module: by now the 1-minute job submitted first has (nearly) hit its limit.
    with pytest.raises(JobFailed) as info:
        timeout_job.wait(timeout=180)
    assert timeout_job.state is JobState.TIMEOUT and info.value.step == "forever"
    assert scontrol(timeout_job.id)["JobState"] == "TIMEOUT"
    assert timeout_job.results[1].started is None
