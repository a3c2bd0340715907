"""Fast tests of launchers.slurm / launchers.remote: pure functions, snapshot-tested batch scripts, and jobs run through
the one fake of sbatch/scontrol/scancel (tests/slurm/fake_slurm.py). The real cluster tests are test_slurm_cluster.py.

Update the stored scripts after an intended change: LAZYTUNE_UPDATE_SNAPSHOTS=1 pytest tests/test_slurm.py
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import launchers
from launchers import JobFailed, JobState, Step
from launchers.slurm import (
    SlurmError,
    SlurmJob,
    SlurmLauncher,
    map_state,
    parse_exit_code,
    parse_gres_gpu_name,
    parse_scontrol_job,
)
from launchers.slurm_script import Resources, quote_arg, render_batch_script, sbatch_argv, shell_var
from tests.helpers.snapshots import check_snapshot as check_stored
from tests.slurm import fake_slurm

# `launchers.remote` / `launchers.slurm` are the factory functions; these are their modules.
remote_mod = importlib.import_module("launchers.remote")
slurm_mod = importlib.import_module("launchers.slurm")
SNAPSHOTS = Path(__file__).parent / "snapshots" / "slurm"

# Folder names that break naive quoting: spaces, both quotes, ;, $(), backslash and a newline.
NASTY = '/runs/it\'s a "run"; $(touch /tmp/lazytune-pwned) `id` \\ \nnext line'
PY = "/opt/py env/bin/python"


def check_snapshot(name: str, text: str) -> None:
    check_stored(SNAPSHOTS, name, text)


def pipeline(folder: str = NASTY) -> list[Step]:
    return [
        Step("train", [PY, "-m", "lazytune.scripts.train", "--out", f"{folder}/lora", "--note", "a;b $(c) 'd'"],
             log=f"{folder}/logs/train.log", env={"WANDB_MODE": "off", "HF_TOKEN": "hf_abcdefgh12345"},
             cwd=folder, distributed=True),
        Step("merge", [PY, f"{folder}/merge.py", "--in", f"{folder}/lora"], log=f"{folder}/logs/merge.log"),
    ]  # fmt: skip


def bash_syntax_ok(script: str) -> None:
    """`bash -n` accepts the script; shellcheck (where installed) finds no warning in it."""
    proc = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-S", "warning", "-s", "bash", "-"], input=script, text=True,
                              capture_output=True)  # fmt: skip
        assert proc.returncode == 0, proc.stdout


# ------------------------------------------------------------------------------------------------ pure functions
def test_quote_arg_keeps_everything_literal_but_shell_vars() -> None:
    assert quote_arg("a b") == "'a b'"
    assert quote_arg(f"--rdzv_endpoint={shell_var('MASTER_ADDR')}:{shell_var('MASTER_PORT')}") == (
        '--rdzv_endpoint="${MASTER_ADDR}":"${MASTER_PORT}"'
    )
    assert quote_arg("$(x)" + shell_var("A")) == "'$(x)'\"${A}\""
    out = subprocess.run(["bash", "-c", "A='1 2'; printf '%s|' " + quote_arg("$(x) " + shell_var("A") + " `y`")],
                         capture_output=True, text=True).stdout  # fmt: skip
    assert out == "$(x) 1 2 `y`|"


@pytest.mark.parametrize(
    "case,res",
    [
        ("single_cpu", Resources()),
        ("single_node_4gpu", Resources(ntasks_per_node=4, ngpus=4, partition="gpu", time="2:00:00")),
        ("two_nodes", Resources(nnodes=2, ntasks_per_node=8, ngpus=8, partition="a100", time="1-0", mem="200G")),
    ],
)
def test_batch_script_snapshot(case: str, res: Resources) -> None:
    argv = sbatch_argv(Path(NASTY) / "job.sh", "sft run", Path(NASTY) / "slurm.out", res, ["HOME", "PATH"])
    script = render_batch_script(pipeline(), "sft run", Path(NASTY) / "steps.tsv", res, {"LAZYTUNE_X": "1 2"},
                                 argv[1:-1], ["HF_TOKEN"])  # fmt: skip
    bash_syntax_ok(script)
    assert "hf_abcdefgh12345" not in script
    check_snapshot(f"{case}.sh", script)
    check_snapshot(f"{case}.sbatch-argv.json", json.dumps(argv, indent=1) + "\n")


def test_sbatch_argv_flags() -> None:
    res = Resources(nnodes=2, ntasks_per_node=4, ngpus=4, partition="debug", time="10", cpus_per_task=3, mem="8G")
    argv = sbatch_argv(Path("/j/job.sh"), "my job\nx", Path("/j/100%/out"), res, ["PATH", "HOME"], ["--qos=high"])
    assert argv == [
        "sbatch", "--parsable", "--job-name=my_job_x", "--output=/j/100%%/out", "--nodes=2", "--ntasks-per-node=4",
        "--gres=gpu:4", "--partition=debug", "--time=10", "--cpus-per-task=3", "--mem=8G", "--export=PATH,HOME",
        "--qos=high", "/j/job.sh",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        sbatch_argv(Path("/j"), "x", Path("/o"), res, ["BAD,NAME"])


def test_parse_scontrol_and_states() -> None:
    line = (
        "JobId=12 JobName=sft run UserId=root(0) GroupId=root(0) Priority=1 JobState=FAILED Reason=NonZeroExitCode "
        "Dependency=(null) Requeue=1 ExitCode=3:0 RunTime=00:00:01 TimeLimit=01:00:00 NodeList=ltnode[1-2] "
        "Command=/runs/a b/job.sh WorkDir=/work/main StdOut=/runs/a b/slurm.out"
    )
    f = parse_scontrol_job(line)
    assert f["JobState"] == "FAILED" and f["Reason"] == "NonZeroExitCode" and f["NodeList"] == "ltnode[1-2]"
    assert f["JobName"] == "sft run" and f["Command"] == "/runs/a b/job.sh"
    assert parse_exit_code(f["ExitCode"]) == (3, 0)
    assert parse_exit_code("0:15") == (0, 15) and parse_exit_code("") == (None, None)
    assert map_state("CANCELLED by 0") is JobState.CANCELLED
    assert map_state("OUT_OF_MEMORY") is JobState.OUT_OF_MEMORY
    assert map_state("NODE_FAIL") is JobState.NODE_FAIL
    assert map_state("TIMEOUT") is JobState.TIMEOUT
    assert map_state("COMPLETING") is JobState.RUNNING and map_state("CONFIGURING") is JobState.PENDING
    assert map_state("SOMETHING_NEW") is None


def test_gres_gpu_name() -> None:
    assert parse_gres_gpu_name("gpu:a100:8(S:0-1)\n") == "A100"
    assert parse_gres_gpu_name("tmpdisk:100,gpu:nvidia_h100_80gb_hbm3:4") == "NVIDIA H100 80GB HBM3"
    assert parse_gres_gpu_name("gpu:2\n(null)\n") is None and parse_gres_gpu_name("") is None


def test_environment_allow_list_and_secrets(tmp_path: Path) -> None:
    launcher = SlurmLauncher(env={"MY_API_KEY": "k" * 12, "PLAIN": "p"}, env_allow=["EXTRA", "GH_TOKEN"])
    environ = {"PATH": "/bin", "HF_HOME": "/h", "HF_TOKEN": "hf_secret_value", "GH_TOKEN": "ghp_secret_value",
               "EXTRA": "1", "UNRELATED": "x", "AWS_SECRET_ACCESS_KEY": "aws_secret_value"}  # fmt: skip
    steps = [Step("s", ["python", "-c", "pass"], log=tmp_path / "s.log", env={"DB_PASSWORD": "pw_value_123"})]
    script, argv, submit_env = launcher.prepare(steps, "j", tmp_path, environ)
    export = argv[[a.startswith("--export=") for a in argv].index(True)].split("=", 1)[1].split(",")
    # allow-listed, prefixed (non-secret), explicitly named (even secret), launcher/step secrets; nothing else
    assert export == sorted(["PATH", "HF_HOME", "EXTRA", "GH_TOKEN", "MY_API_KEY", "DB_PASSWORD"])
    for value in ("k" * 12, "hf_secret_value", "ghp_secret_value", "pw_value_123", "aws_secret_value"):
        assert value not in script
    assert submit_env["MY_API_KEY"] == "k" * 12 and submit_env["DB_PASSWORD"] == "pw_value_123"
    assert "export PLAIN=p" in script and "lazytune_redact 'DB_PASSWORD GH_TOKEN MY_API_KEY'" in script
    leaky = [Step("s", ["python", "--token", "hf_secret_value"], log=tmp_path / "s.log")]
    with pytest.raises(ValueError, match="HF_TOKEN"):
        launcher.prepare(leaky, "j", tmp_path, environ)
    with pytest.raises(ValueError, match="secret"):
        render_batch_script(steps, "j", tmp_path / "st", Resources(), {"X_TOKEN": "abc"})


def test_launcher_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SlurmLauncher, "_query_gpu_name", lambda self: "A100")  # no sinfo in a unit test
    with pytest.raises(ValueError):
        SlurmLauncher(nnodes=0)
    with pytest.raises(ValueError):
        SlurmLauncher(time="2 hours")
    with pytest.raises(TypeError):
        SlurmLauncher(sbatch_args="--qos=high")
    with pytest.raises(ValueError):
        SlurmLauncher(ntasks_per_node=2, nproc=3)
    topo = SlurmLauncher(nnodes=2, ngpus=4).topology()
    assert (topo.nnodes, topo.nproc_per_node, topo.gpus_per_node, topo.world_size) == (2, 4, 4, 8)
    assert topo.gpu_name == "A100" and SlurmLauncher().topology().gpu_name is None
    assert SlurmLauncher(time=30).resources.time == "30"


def test_partition_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lazytune import launchers as configured  # launchers as lazytune makes them: its settings as defaults

    monkeypatch.setenv("LAZYTUNE_SLURM_PARTITION", "gpu")
    assert configured.slurm().resources.partition == "gpu"
    assert configured.slurm(partition="debug").resources.partition == "debug"
    assert SlurmLauncher().resources.partition is None  # the launchers package itself reads no lazytune setting
    monkeypatch.delenv("LAZYTUNE_SLURM_PARTITION")
    assert configured.slurm().resources.partition is None


# ------------------------------------------------------------------------------------------------ remote resolver
def test_remote_resolves_configured_launcher(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    have = {"sbatch": "/usr/bin/sbatch", "scontrol": "/usr/bin/scontrol"}
    up = lambda: None  # noqa: E731  (`scontrol ping` answers)
    assert remote_mod.resolve_name(which=have.get, ping=up) == "slurm"
    assert remote_mod.resolve_name(which=lambda _: None) == "local"
    assert remote_mod.resolve_name("local", which=have.get, ping=up) == "local"
    assert remote_mod.resolve_name("empty", which=have.get, ping=up) == "local"
    assert remote_mod.resolve_name("remote", which=have.get, ping=up) == "slurm"
    assert remote_mod.resolve_name("auto", which=have.get, ping=lambda: "timed out") == "local"
    with pytest.raises(ValueError, match="k8s"):
        remote_mod.resolve_name("k8s", which=have.get)
    monkeypatch.setattr(remote_mod, "scheduler_present", lambda which=None: False)
    launcher = remote_mod.remote(partition="debug", ngpus=0, ntasks_per_node=2, time="1:00:00", sync=False)
    assert isinstance(launcher, launchers.LocalLauncher) and launcher.nproc == 2 and launcher.sync is False
    assert "ignoring partition, time" in capsys.readouterr().err
    monkeypatch.setattr(remote_mod, "scheduler_present", lambda which=None: True)
    monkeypatch.setattr(remote_mod, "_controller_problem", lambda: None)
    assert isinstance(remote_mod.remote(partition="debug"), SlurmLauncher)


# ------------------------------------------------------------------------------------------------ jobs on the fake
@pytest.fixture
def fake_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = fake_slurm.install(tmp_path / "fakebin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "fake-state"))
    monkeypatch.setattr(SlurmJob, "min_query_interval", 0.05)
    return tmp_path


def fast(**kw) -> SlurmLauncher:
    return SlurmLauncher(poll_seconds=0.05, **kw)


def test_fake_job_completes_with_nasty_folder(fake_cluster: Path) -> None:
    folder = fake_cluster / 'it\'s a "run"; $(touch pwned) \nx'
    out = folder / "out.txt"
    steps = [
        Step("one", [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('1')", str(out)],
             log=folder / "one.log"),
        Step("two", [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(' 2')", str(out)],
             log=folder / "two.log", cwd=folder),
    ]  # fmt: skip
    job = fast().run(steps, name="nasty")
    assert job.state is JobState.COMPLETED and out.read_text() == "1 2"
    assert [r.exit_code for r in job.results] == [0, 0] and all(r.seconds is not None for r in job.results)
    assert not (Path.cwd() / "pwned").exists() and not (folder / "pwned").exists()
    assert (job.folder / "job.sh").exists() and job.id == (job.folder / "job_id").read_text().strip()


def test_fake_failed_step_stops_pipeline(fake_cluster: Path) -> None:
    marker = fake_cluster / "merge-ran"
    steps = [
        Step("train", ["bash", "-c", "echo training; echo 'loss exploded' >&2; exit 3"], log=fake_cluster / "t.log"),
        Step("merge", ["touch", str(marker)], log=fake_cluster / "m.log"),
    ]
    with pytest.raises(JobFailed) as info:
        fast().run(steps, name="fails")
    err = info.value
    assert err.job.state is JobState.FAILED and err.step == "train" and err.exit_code == 3
    assert "loss exploded" in err.log_tail and "loss exploded" in str(err)
    assert not marker.exists() and err.job.results[1].started is None
    assert "exited with 3" in (err.job.failure_reason or "")


def test_fake_cancel_and_pending(fake_cluster: Path) -> None:
    job = fast(sync=False).run([Step("sleep", ["sleep", "60"], log=fake_cluster / "s.log")], name="long")
    deadline = time.monotonic() + 10
    while job.state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    assert job.state is JobState.CANCELLED and job.failed_step == "sleep"
    held = fast(sync=False, sbatch_args=["--hold"]).run([Step("x", ["true"], log=fake_cluster / "x.log")], name="h")
    assert held.state is JobState.PENDING and held.reason == "JobHeldUser"
    held.cancel()
    assert held.state is JobState.CANCELLED


def test_fake_refused_submission_and_forgotten_job(fake_cluster: Path) -> None:
    with pytest.raises(SlurmError, match="Requested node configuration is not available"):
        fast(ngpus=3).run([Step("x", ["true"], log=fake_cluster / "x.log")], name="big")
    job = fast().run([Step("x", ["true"], log=fake_cluster / "x.log")], name="ok")
    # The controller forgets finished jobs after MinJobAge: the status file written by the script still tells.
    state_file = Path(os.environ["FAKE_SLURM_DIR"]) / f"{job.id}.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "purged": True}))
    again = SlurmJob(job.name, job.steps, job.id, job.folder, {})
    assert again.state is JobState.COMPLETED


def test_fake_sacct_answers_for_a_forgotten_job(fake_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [Step("t", ["bash", "-c", "exit 4"], log=fake_cluster / "t.log")]
    job = fast(sync=False).run(steps, name="acct")
    job.wait(raise_on_failure=False)
    state_file = Path(os.environ["FAKE_SLURM_DIR"]) / f"{job.id}.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "purged": True}))
    (job.folder / "steps.tsv").unlink()  # only accounting can tell now
    monkeypatch.setenv("FAKE_SLURM_ACCOUNTING", "1")
    again = SlurmJob(job.name, job.steps, job.id, job.folder, {})
    assert again.state is JobState.FAILED and again.exit_code == 4 and again.slurm_state == "FAILED"
    assert again.summary()["slurm"]["exit_code"] == "4:0"


def test_fake_memory_kill_reads_as_out_of_memory(fake_cluster: Path) -> None:
    step = Step("hog", ["bash", "-c", "echo 'slurmstepd: error: Exceeded job memory limit' >&2; kill -9 $$"],
                log=fake_cluster / "hog.log")  # fmt: skip
    job = fast(sync=False).run([step], name="oom")
    job.wait(raise_on_failure=False)
    # the fake's slurmstepd stand-in: the message belongs in the batch output, where slurmstepd writes it
    assert job.state in (JobState.FAILED, JobState.OUT_OF_MEMORY)
    job.output.write_text("slurmstepd-n1: error: Exceeded job memory limit\n")
    again = SlurmJob(job.name, job.steps, job.id, job.folder, {})
    assert again.state is JobState.OUT_OF_MEMORY


def test_fake_controller_hiccup_keeps_state(fake_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = fast(sync=False).run([Step("s", ["sleep", "30"], log=fake_cluster / "s.log")], name="hiccup")
    deadline = time.monotonic() + 10
    while job.state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    real_run = slurm_mod._run

    def scontrol_times_out(argv, env=None, timeout=60):
        if argv[0] == "scontrol":
            raise SlurmError(f"scontrol did not answer within {timeout} s")
        return real_run(argv, env=env, timeout=timeout)

    monkeypatch.setattr(slurm_mod, "_run", scontrol_times_out)
    job._last_query = 0.0
    assert job.state is JobState.RUNNING  # one failed query keeps the last state
    job.unreachable_grace, job._last_query = 0.0, 0.0
    time.sleep(0.01)
    with pytest.raises(SlurmError, match="did not answer"):
        _ = job.state  # ... but a controller that stays unreachable is an error
    monkeypatch.setattr(slurm_mod, "_run", real_run)
    job.cancel()
    assert job.state is JobState.CANCELLED


def test_fake_secret_masked_in_log(fake_cluster: Path) -> None:
    step = Step("s", ["bash", "-c", 'echo "token is $HF_TOKEN"'], log=fake_cluster / "s.log",
                env={"HF_TOKEN": "hf_very_secret_1"})  # fmt: skip
    job = fast().run([step], name="secret")
    assert "token is ***" in step.log.read_text() and "hf_very_secret_1" not in step.log.read_text()
    assert "hf_very_secret_1" not in (job.folder / "job.sh").read_text()


# ------------------------------------------------------------------------------------- no controller answering
def test_planning_queries_time_out_when_slurm_hangs(fake_cluster: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    """SLURM's clients installed but no controller: each query hangs (the real ones retry for ~10 s). Planning asks
    with a 3 s limit and says why; remote() runs locally and says why."""
    monkeypatch.setenv("FAKE_SLURM_HANG", "1")
    started = time.monotonic()
    with pytest.warns(slurm_mod.SlurmWarning, match="did not answer within 3.0 s"):
        assert SlurmLauncher(ngpus=1).topology().gpu_name is None
    launcher = launchers.remote(partition="debug")
    took = time.monotonic() - started
    assert isinstance(launcher, launchers.LocalLauncher)
    assert "SLURM controller does not answer" in capsys.readouterr().err
    assert took < 10, f"planning waited {took:.1f} s on a hanging SLURM"


def test_fake_controller_answers(fake_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SLURM_GRES", "gpu:a100:8(S:0-1)")
    assert slurm_mod.controller_problem() is None
    assert isinstance(launchers.remote(), SlurmLauncher)
    assert SlurmLauncher(ngpus=1).topology().gpu_name == "A100"
