"""What steps see on a GPU host, through a stand-in nvidia-smi (no GPU here): hidden GPUs on CPU runs, one GPU per
process, torchrun for DeepSpeed steps, the device order, compute capability."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import launchers
from launchers import Step, gpus
from launchers.slurm_script import Resources, step_argv
from tests.helpers.fake_nvidia_smi import card, install
from tests.helpers.models import env_python

PY = sys.executable
SHOW_ENV = "import json, os; print('ENV=' + json.dumps({k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', " \
           "'CUDA_DEVICE_ORDER', 'WORLD_SIZE', 'LOCAL_RANK')}))"


@pytest.fixture
def one_h100(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = install(tmp_path / "smi", [card("NVIDIA H100 80GB HBM3", 81559, cap="9.0")])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return bin_dir


def env_seen(log: Path) -> list[dict]:
    return [json.loads(line[4:]) for line in log.read_text().splitlines() if line.startswith("ENV=")]


def test_fake_nvidia_smi_reports_compute_capability(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = install(tmp_path, [card("NVIDIA A100-SXM4-80GB", 81920, cap="8.0"), card("Tesla T4", 15360, cap="7.5")])
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    found = gpus.query_nvidia_smi()
    assert [(g.name, g.compute_cap) for g in found] == [("NVIDIA A100-SXM4-80GB", 8.0), ("Tesla T4", 7.5)]
    topo = launchers.local(ngpus=2).topology()  # mixed cards: the weakest decides
    assert topo.compute_capability == 7.5 and topo.gpus_per_node == 2


def test_old_driver_without_compute_cap_still_lists_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = install(tmp_path, [card("NVIDIA A100-SXM4-80GB", 81920)], old_driver=True)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (g,) = gpus.query_nvidia_smi()
    assert g.name == "NVIDIA A100-SXM4-80GB" and g.compute_cap is None
    assert launchers.local(ngpus=1).topology().compute_capability is None


def test_ngpus_0_hides_the_gpus(one_h100: Path, tmp_path: Path) -> None:
    launcher = launchers.local(ngpus=0, stream=False)
    assert launcher.topology().device == "cpu"
    log = tmp_path / "cpu.log"
    launcher.run([Step("show", [PY, "-c", SHOW_ENV], log=log)], "cpu-run")
    assert env_seen(log)[0]["CUDA_VISIBLE_DEVICES"] == ""


def test_chosen_gpu_by_index_in_pci_order(one_h100: Path, tmp_path: Path) -> None:
    log = tmp_path / "gpu.log"
    launchers.local(ngpus=1, stream=False).run([Step("show", [PY, "-c", SHOW_ENV], log=log)], "gpu-run")
    seen = env_seen(log)[0]
    assert seen["CUDA_VISIBLE_DEVICES"] == "0" and seen["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_more_processes_than_gpus_is_a_plan_error(one_h100: Path, tmp_path: Path) -> None:
    from lazytune import finetune
    from lazytune.errors import ConfigError

    launcher = launchers.local(ngpus=1, nproc=2, stream=False)
    assert "each process needs its own GPU" in launcher.problems()[0]
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"nproc=2 but 1 GPU\(s\) chosen"):
        finetune.dummy(model, tmp_path / "out", launcher=launcher).plan()
    with pytest.raises(ValueError, match="each process needs its own GPU"):
        launcher.submit([Step("x", [PY, "-c", "pass"], log=tmp_path / "x.log")], "x")
    assert launchers.local(ngpus=0, nproc=2).problems() == []  # CPU processes need no GPU


def test_torchrun_step_runs_under_torchrun_with_one_process(tmp_path: Path) -> None:
    python = env_python("llamafactory")  # any Python with torch
    log = tmp_path / "t.log"
    script = tmp_path / "show.py"
    script.write_text(SHOW_ENV + "\n")
    step = Step("train", [python, str(script)], log=log, distributed=True, torchrun=True)
    launchers.local(ngpus=0, stream=False).run([step], "ds")
    seen = env_seen(log)
    assert len(seen) == 1 and seen[0]["WORLD_SIZE"] == "1" and seen[0]["LOCAL_RANK"] == "0"
    plain = Step("train", [python, str(script)], log=tmp_path / "p.log", distributed=True)
    launchers.local(ngpus=0, stream=False).run([plain], "plain")
    assert env_seen(tmp_path / "p.log")[0]["WORLD_SIZE"] is None


def test_torchrun_step_in_a_slurm_script(tmp_path: Path) -> None:
    res = Resources(nnodes=1, ntasks_per_node=1, ngpus=1)
    step = Step("train", [PY, "train.py"], log=tmp_path / "t.log", distributed=True, torchrun=True)
    assert step_argv(step, res)[1:3] == ["-m", "torch.distributed.run"]
    assert step_argv(Step("train", [PY, "train.py"], log=tmp_path / "t.log", distributed=True), res) == [PY, "train.py"]
    with pytest.raises(ValueError, match="needs distributed=True"):
        Step("x", [PY, "x.py"], log=tmp_path / "x.log", torchrun=True)
