"""Plans for GPU hosts, made here with a stand-in nvidia-smi (or a stand-in srun): precision from compute
capability, torchrun for DeepSpeed, LLaMA-Factory's torchrun settings, alpacalora's device/memory options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import launchers
from launchers.slurm import SlurmLauncher, parse_probe
from launchers.slurm_script import sbatch_argv
from lazytune import finetune
from lazytune.errors import ConfigError
from tests.helpers import lf_data
from tests.helpers.fake_nvidia_smi import card, install

A100 = card("NVIDIA A100-SXM4-80GB", 81920, cap="8.0")
T4 = card("Tesla T4", 15360, cap="7.5")
FUTURE = card("NVIDIA Z900 Superchip", 196608, cap="10.0")  # a card no table knows


@pytest.fixture
def cards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Call with card dicts: PATH gets an nvidia-smi listing them."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def make(*found: dict, old_driver: bool = False) -> None:
        bin_dir = install(tmp_path / f"smi-{len(list(tmp_path.iterdir()))}", list(found), old_driver=old_driver)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    return make


def lf_model(root: Path) -> Path:
    folder = root / "Qwen2.5-0.5B-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    return folder


def step(plan, name: str):
    return next(s for s in plan.steps if s.name == name)


def lf_plan(tmp_path: Path, launcher: launchers.Launcher, **kw):
    data = lf_data.alpaca(tmp_path / "a.json")
    plan = finetune.llamafactory(lf_model(tmp_path), tmp_path / "t", launcher=launcher, **kw).plan(data)
    train = yaml.safe_load(next(f.content for f in plan.files if f.path.name == "train.yaml"))
    return plan, train


@pytest.mark.parametrize(("gpu", "precision"), [(A100, "bf16"), (T4, "fp16"), (FUTURE, "bf16")])
def test_llamafactory_precision_from_compute_capability(cards, tmp_path: Path, gpu: dict, precision: str) -> None:
    cards(gpu)
    plan, train = lf_plan(tmp_path, launchers.local(ngpus=1))
    assert train.get(precision) is True and not ({"bf16", "fp16"} - {precision}) & set(train)
    assert any(f"compute capability {gpu['compute_cap']}" in n for n in plan.notes)


def test_unknown_card_without_compute_capability_is_an_error(cards, tmp_path: Path) -> None:
    cards(FUTURE, old_driver=True)
    with pytest.raises(ConfigError, match="cannot tell whether GPU 'NVIDIA Z900 Superchip' compute in bf16"):
        lf_plan(tmp_path, launchers.local(ngpus=1))
    _, train = lf_plan(tmp_path, launchers.local(ngpus=1), bf16=True)  # the user's choice is enough
    assert train["bf16"] is True


def test_deepspeed_step_runs_under_torchrun_with_lf_settings(cards, gpu_packages: str, tmp_path: Path) -> None:
    cards(A100)
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 2}}))
    plan, _ = lf_plan(tmp_path, launchers.local(ngpus=1), deepspeed=str(ds))
    train = step(plan, "train")  # after the data step (LF's loader on the data, one CPU process)
    assert train.torchrun and train.runs_torchrun(1)
    assert train.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert train.env["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1"
    plain, _ = lf_plan(tmp_path, launchers.local(ngpus=1))  # one process, no DeepSpeed: a plain process
    assert not step(plain, "train").torchrun and "PYTORCH_CUDA_ALLOC_CONF" not in step(plain, "train").env
    cpu, _ = lf_plan(tmp_path, launchers.local(ngpus=0, nproc=2))  # torchrun on CPU: no CUDA settings
    assert step(cpu, "train").runs_torchrun(2) and "PYTORCH_CUDA_ALLOC_CONF" not in step(cpu, "train").env


def argv_value(argv, flag: str) -> str | None:
    argv = list(argv)
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_alpacalora_takes_precision_and_checkpointing_from_the_plan(cards, tiny_folder_model: Path,
                                                                    alpaca_file: Path, tmp_path: Path) -> None:
    cards(T4)
    plan = finetune.alpacalora(tiny_folder_model, tmp_path / "g", launcher=launchers.local(ngpus=1),
                               val_set_size=0).plan(alpaca_file)  # fmt: skip
    train = plan.steps[0].argv
    assert argv_value(train, "--precision") == "fp16"  # a T4 emulates bf16: torch's is_bf16_supported() says yes
    assert argv_value(train, "--gradient-checkpointing") == "true"  # on by default with GPUs
    plan = finetune.alpacalora(tiny_folder_model, tmp_path / "c", launcher=launchers.local(ngpus=0),
                               val_set_size=0).plan(alpaca_file)  # fmt: skip
    assert argv_value(plan.steps[0].argv, "--precision") == "fp32"
    assert argv_value(plan.steps[0].argv, "--gradient-checkpointing") == "false"
    plan = finetune.alpacalora(tiny_folder_model, tmp_path / "o", launcher=launchers.local(ngpus=1), val_set_size=0,
                               gradient_checkpointing=False).plan(alpaca_file)  # fmt: skip
    assert argv_value(plan.steps[0].argv, "--gradient-checkpointing") == "false"


def test_alpacalora_deepspeed_runs_under_torchrun(cards, gpu_packages: str, tiny_folder_model: Path,
                                                  alpaca_file: Path, tmp_path: Path) -> None:
    cards(A100)
    ds = tmp_path / "ds.json"
    ds.write_text("{}")
    plan = finetune.alpacalora(tiny_folder_model, tmp_path / "g", launcher=launchers.local(ngpus=1), val_set_size=0,
                               deepspeed=ds).plan(alpaca_file)  # fmt: skip
    assert plan.steps[0].torchrun and plan.steps[0].runs_torchrun(1)


# -- SLURM: a typed request, or one node asked --------------------------------------------------------------------
def test_slurm_gpu_type_is_requested_and_planned(tmp_path: Path) -> None:
    launcher = SlurmLauncher(ngpus=8, gpu_type="a100", probe_seconds=0)
    argv = sbatch_argv(tmp_path / "job.sh", "x", tmp_path / "out", launcher.resources, [])
    assert "--gres=gpu:a100:8" in argv
    assert launcher.topology().gpu_name == "a100"
    with pytest.raises(ValueError, match="gres type"):
        SlurmLauncher(ngpus=1, gpu_type="a100;rm -rf")


def test_slurm_more_processes_than_gpus_is_a_plan_error(tmp_path: Path) -> None:
    launcher = SlurmLauncher(ngpus=1, ntasks_per_node=2, gpu_type="a100")
    assert "one GPU per process" in launcher.problems()[0]
    with pytest.raises(ConfigError, match="ntasks_per_node=2 but ngpus=1"):
        lf_plan(tmp_path, launcher)
    assert SlurmLauncher(ngpus=0, ntasks_per_node=2).problems() == []


def test_parse_probe() -> None:
    assert parse_probe("NVIDIA H100 80GB HBM3, 81559, 9.0\n") == ("NVIDIA H100 80GB HBM3", 79.6, 9.0)
    assert parse_probe("NVIDIA RTX A6000, Ada, 49140, [N/A]\n") == ("NVIDIA RTX A6000, Ada", 48.0, None)
    assert parse_probe("srun: error: Unable to allocate resources\n") is None


def test_untyped_gres_asks_a_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    for name, body in (("sinfo", "echo 'gpu:8(S:0-1)'"),
                       ("srun", f"echo \"$@\" >> '{calls}'; echo 'NVIDIA A100-SXM4-80GB, 81920, 8.0'")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    topo = SlurmLauncher(ngpus=8, partition="gpu").topology()
    assert topo.gpu_name == "NVIDIA A100-SXM4-80GB" and topo.compute_capability == 8.0
    assert "--gres=gpu:1" in calls.read_text() and "--partition=gpu" in calls.read_text()
    _, train = lf_plan(tmp_path, SlurmLauncher(ngpus=8, partition="gpu"))
    assert train["bf16"] is True


def test_untyped_gres_without_an_answer_asks_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sinfo", "echo 'gpu:8'"), ("srun", "echo 'srun: error: Unable to allocate' >&2; exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConfigError, match=r"SLURM gres without a type.*gpu_type="):
        lf_plan(tmp_path, SlurmLauncher(ngpus=8))
    _, train = lf_plan(tmp_path, SlurmLauncher(ngpus=8, gpu_type="h100"))
    assert train["bf16"] is True


# -- memory: loading peaks, host RAM, the safety margin ----------------------------------------------------------
CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def config_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((CONFIGS / f"{name}.json").read_text())
    return folder


def test_qlora_zero3_counts_the_loading_peak() -> None:
    from lazytune.backends.auto.memory import Setup, estimate
    from lazytune.backends.auto.sizing import facts_from_config

    f = facts_from_config(json.loads((CONFIGS / "Qwen2.5-72B.json").read_text()), "Qwen2.5-72B")
    s = Setup("qlora", 8, 1, 4, True, 3, 1024)
    e = estimate(f, s)
    assert e.loading > 35 and e.training < 20 and e.total == e.loading  # ~37 GB while loading, not 19 GB
    assert "while loading" in e.describe()
    assert estimate(f, Setup("qlora", 8, 1, 4, True, 0, 1024)).loading == 0


def test_host_ram_of_merge_and_processes() -> None:
    from lazytune.backends.auto.memory import Setup, host_estimate
    from lazytune.backends.auto.sizing import facts_from_config

    f = facts_from_config(json.loads((CONFIGS / "Qwen2.5-72B.json").read_text()), "Qwen2.5-72B")
    s = Setup("lora", 8, 1, 4, True, 3, 1024)
    lf = host_estimate(f, s, 8, merge=True)
    assert lf.merge == pytest.approx(2 + f.params_total * 2 / 2**30 * 1.1) and lf.merge > 140  # bf16 on the CPU
    assert lf.train == 8 * (2 + 5)  # each process streams shards to its own GPU
    ds = host_estimate(f, s, 8, merge=True, full_copy_per_process=True)
    assert ds.train > 8 * 135  # every process builds the whole model in host RAM first
    assert host_estimate(f, Setup("full", 8, 1, 4, True, 3, 1024), 8, merge=True).merge == 0


def test_auto_refuses_what_this_machines_ram_cannot_merge(cards, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from lazytune.backends.auto import backend as auto_module

    cards(*[card("NVIDIA H100 80GB HBM3", 81559, cap="9.0")] * 8)
    monkeypatch.setattr(auto_module, "_ram_gb", lambda: 64.0)
    with pytest.raises(ConfigError, match=r"host RAM per node.*LoRA merge on the CPU 1[45]\d\.\d GB"):
        finetune.auto(config_folder(tmp_path, "Qwen2.5-72B"), tmp_path / "out", launcher=launchers.local(ngpus=8))
    small = finetune.auto(config_folder(tmp_path, "Qwen2.5-0.5B"), tmp_path / "o2", launcher=launchers.local(ngpus=1))
    text = small.explain()
    assert "host RAM : " in text and "of 64 GB" in text and "with the safety margin" in text
    planned = finetune.auto(config_folder(tmp_path, "Qwen2.5-72B"), tmp_path / "o3", gpu_type="H100", ngpus=8)
    assert "the nodes' RAM is unknown" in planned.explain()  # planned for other machines: shown, not checked
