"""`lazytune train --launcher slurm` and `lazytune cancel` of a SLURM run: on the fake sbatch/scontrol/scancel
(fast, always) and on the real test cluster (tests/slurm/start.sh; skipped with the reason when unreachable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm import fake_slurm
from tests.test_cli import CLI, lazytune
from tests.test_cli_runs import manifest, started_steps, wait_for
from tests.test_slurm_cluster import slurm_cluster  # noqa: F401  (session fixture: the real test cluster)


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = fake_slurm.install(tmp_path / "fakebin")
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(tmp_path / "fake-state")}


def train_and_cancel(tmp_path: Path, model: Path, partition: str, env: dict[str, str]) -> None:
    target = tmp_path / "long"
    proc = subprocess.Popen([*CLI, "train", "dummy", "--base", str(model), "--target", str(target), "--launcher",
                             "slurm", "--partition", partition, "sleep=0.5", "steps_per_epoch=200", "-q"],
                            env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: started_steps(target), 60, "the SLURM job to train")
        job_id = manifest(target)["job"]["id"]
        out = lazytune("cancel", target, env=env)
        assert out.returncode == 0, out.stderr
        assert f"SLURM job {job_id} cancelled" in out.stdout
        assert proc.wait(60) == 130, proc.stderr.read()
        assert "CANCELLED" in proc.stderr.read()
        wait_for(lambda: manifest(target)["state"] == "CANCELLED", 30, "the manifest to say CANCELLED")
    finally:
        if proc.poll() is None:
            proc.kill()


def train_dummy(tmp_path: Path, model: Path, partition: str, env: dict[str, str]) -> None:
    out = lazytune("train", "dummy", "--base", model, "--target", tmp_path / "t", "--launcher", "slurm",
                   "--partition", partition, "-q", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "t" / "lazytune_run.json").read_text())
    assert data["state"] == "COMPLETED" and data["launcher_kind"] == "slurm" and data["job"]["id"].isdigit()
    jobs = lazytune("jobs", "--root", tmp_path, env=env)
    assert data["run_id"] in jobs.stdout and "COMPLETED" in jobs.stdout


def test_train_and_cancel_on_fake_slurm(tmp_path: Path, tiny_folder_model: Path, fake_env: dict[str, str]) -> None:
    train_dummy(tmp_path, tiny_folder_model, "debug", fake_env)
    train_and_cancel(tmp_path, tiny_folder_model, "debug", fake_env)


def test_local_only_flags_are_refused(tmp_path: Path, tiny_folder_model: Path) -> None:
    out = lazytune("plan", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "--nnodes", "2")
    assert out.returncode == 2 and "only for --launcher slurm or remote" in out.stderr


@pytest.mark.slurm
def test_train_and_cancel_on_the_real_cluster(slurm_cluster: str, tmp_path: Path,  # noqa: F811
                                              tiny_folder_model: Path) -> None:
    env = {"SLURM_CONF": os.environ.get("SLURM_CONF", "")} if os.environ.get("SLURM_CONF") else {}
    train_dummy(tmp_path, tiny_folder_model, slurm_cluster, env)
    train_and_cancel(tmp_path, tiny_folder_model, slurm_cluster, env)


ASYNC = """
import os, sys
from lazytune import finetune, launchers
run = finetune.dummy(sys.argv[1], sys.argv[2], launcher=launchers.slurm(partition="debug", sync=False), sleep=0.5,
                     steps_per_epoch=200)()
print(run.job.id, flush=True)
os._exit(0)  # the controller goes away; the SLURM job runs on
"""


def test_jobs_and_cancel_of_a_slurm_run_whose_controller_is_gone(tmp_path: Path, tiny_folder_model: Path,
                                                                   fake_env: dict[str, str]) -> None:
    target = tmp_path / "async"
    out = subprocess.run([sys.executable, "-c", ASYNC, str(tiny_folder_model), str(target)], capture_output=True,
                         text=True, env={**os.environ, **fake_env}, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_for(lambda: started_steps(target), 60, "the SLURM job to train")
    jobs = lazytune("jobs", "--root", tmp_path, env=fake_env)
    assert "RUNNING" in jobs.stdout  # from scontrol: the controller is gone, the job is not
    cancel = lazytune("cancel", target, env=fake_env)
    assert cancel.returncode == 0 and f"SLURM job {out.stdout.strip()} cancelled" in cancel.stdout
    assert manifest(target)["state"] == "CANCELLED"
    jobs = lazytune("jobs", "--root", tmp_path, env=fake_env)
    assert "CANCELLED" in jobs.stdout
