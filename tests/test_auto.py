"""finetune.auto: the decision table, the keywords handed to the chosen backend, errors, and one real CPU run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from launchers import Launcher, Topology
from launchers.gpus import parse_nvidia_smi
from lazytune import finetune
from lazytune.backends.auto.backends import backend_installed
from lazytune.backends.auto.decide import NothingFitsError, Request, decide
from lazytune.backends.auto.gpu_table import Hardware
from lazytune.backends.auto.memory import estimate
from lazytune.backends.auto.sizing import facts_from_config
from lazytune.errors import ConfigError, UnknownOptionError
from tests.test_slurm_cluster import slurm_cluster as _cluster

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
H100 = "{i}, GPU-1a2b3c4d-0000-0000-0000-00000000000{i}, NVIDIA H100 80GB HBM3, 81559, 4, 81555"
RTX4090 = "{i}, GPU-9f1e0000-0000-0000-0000-00000000000{i}, NVIDIA GeForce RTX 4090, 24564, 300, 24264"

# (model, GB per GPU, GPUs, ctx_len) -> (method, ZeRO stage, micro batch, gradient checkpointing); None: nothing fits.
# A change here is a change of behaviour users will see: review it, then update the table.
TABLE = {
    ("Qwen2.5-0.5B", 24, 1, 1024): ("lora", 0, 4, False),
    ("Qwen2.5-0.5B", 24, 1, 8192): ("lora", 0, 1, True),
    ("Qwen2.5-0.5B", 24, 8, 1024): ("lora", 0, 4, False),
    ("Qwen2.5-0.5B", 24, 8, 8192): ("lora", 0, 1, True),
    ("Qwen2.5-0.5B", 79.6, 1, 1024): ("lora", 0, 16, False),
    ("Qwen2.5-0.5B", 79.6, 1, 8192): ("lora", 0, 2, False),
    ("Qwen2.5-0.5B", 79.6, 8, 1024): ("lora", 0, 4, False),
    ("Qwen2.5-0.5B", 79.6, 8, 8192): ("lora", 0, 2, False),
    ("Qwen2.5-7B", 24, 1, 1024): ("lora", 0, 2, True),
    ("Qwen2.5-7B", 24, 1, 8192): None,
    ("Qwen2.5-7B", 24, 8, 1024): ("lora", 0, 2, True),
    ("Qwen2.5-7B", 24, 8, 8192): None,
    ("Qwen2.5-7B", 79.6, 1, 1024): ("lora", 0, 4, False),
    ("Qwen2.5-7B", 79.6, 1, 8192): ("lora", 0, 2, True),
    ("Qwen2.5-7B", 79.6, 8, 1024): ("lora", 0, 4, False),
    ("Qwen2.5-7B", 79.6, 8, 8192): ("lora", 0, 2, True),
    ("Qwen2.5-14B", 24, 1, 1024): ("qlora", 0, 2, True),  # 4 sat at 21.4 of 21.6 GB: no margin
    ("Qwen2.5-14B", 24, 1, 8192): None,
    ("Qwen2.5-14B", 24, 8, 1024): ("lora", 3, 4, True),
    ("Qwen2.5-14B", 24, 8, 8192): None,
    ("Qwen2.5-14B", 79.6, 1, 1024): ("lora", 0, 8, True),
    ("Qwen2.5-14B", 79.6, 1, 8192): ("lora", 0, 1, True),
    ("Qwen2.5-14B", 79.6, 8, 1024): ("lora", 0, 4, True),
    ("Qwen2.5-14B", 79.6, 8, 8192): ("lora", 0, 1, True),
    ("Qwen2.5-72B", 24, 1, 1024): None,
    ("Qwen2.5-72B", 24, 1, 8192): None,
    ("Qwen2.5-72B", 24, 8, 1024): None,  # QLoRA+ZeRO-3 loads all 4-bit weights on each GPU first
    ("Qwen2.5-72B", 24, 8, 8192): None,
    ("Qwen2.5-72B", 79.6, 1, 1024): ("qlora", 0, 4, True),
    ("Qwen2.5-72B", 79.6, 1, 8192): None,
    ("Qwen2.5-72B", 79.6, 8, 1024): ("lora", 3, 4, True),
    ("Qwen2.5-72B", 79.6, 8, 8192): ("lora", 3, 1, True),
}


def facts(name: str):
    return facts_from_config(json.loads((CONFIGS / f"{name}.json").read_text()), name)


@pytest.mark.parametrize("key", sorted(TABLE), ids=lambda k: f"{k[0]}-{k[1]:g}GBx{k[2]}-ctx{k[3]}")
def test_decision_table(key: tuple[str, float, int, int]) -> None:
    model, memory, n, ctx = key
    f, hw = facts(model), Hardware("RTX4090" if memory == 24 else "H100-80G", memory, n, True, "test")
    if TABLE[key] is None:
        with pytest.raises(NothingFitsError, match="smallest configuration that would fit: [0-9]+ x ") as err:
            decide(f, hw, Request(ctx_len=ctx))
        assert "needs" in str(err.value) and "GB usable" in str(err.value)
        return
    d = decide(f, hw, Request(ctx_len=ctx))
    s = d.setup
    assert (s.method, s.zero, s.micro_batch, s.checkpointing) == TABLE[key]
    assert d.global_batch == 32 and s.ngpus == n
    assert d.estimate.total == pytest.approx(estimate(f, s).total) and d.estimate.total <= d.usable
    text = d.explain()
    for word in ("model", "hardware", "choice", "estimate", "why", "gradient accumulation"):
        assert word in text
    if s.micro_batch < 32 // n:  # the next bigger micro batch was considered and does not fit
        assert "rejected : micro batch" in text


def test_user_values_are_never_overridden() -> None:
    f, hw = facts("Qwen2.5-7B"), Hardware("RTX4090", 24, 1, True, "test")
    d = decide(f, hw, Request(micro_batch=1, checkpointing=True, method="qlora"))
    assert (d.setup.micro_batch, d.setup.grad_accum, d.setup.method) == (1, 32, "qlora")
    assert "as you asked" in d.explain()
    with pytest.raises(NothingFitsError):  # a fixed micro batch that can't fit is an error, not silently changed
        decide(f, hw, Request(micro_batch=32, checkpointing=False))
    h100 = Hardware("H100-80G", 79.6, 1, True, "test")
    assert decide(f, h100, Request(zero=3)).setup.zero == 3  # the user's DeepSpeed config, even on one GPU
    with pytest.raises(NothingFitsError, match="smallest configuration that would fit: 2 x H100-80G: full .* ZeRO-2"):
        decide(f, replace(h100, count=2), Request(method="full", zero=1))


def test_nothing_fits_without_quantization_names_the_smallest_fit() -> None:
    f, hw = facts("Qwen2.5-72B"), Hardware("RTX4090", 24, 1, True, "test")
    with pytest.raises(NothingFitsError) as err:
        decide(f, hw, Request(allow_quantization=False))
    message = str(err.value)
    assert "72.7B parameters" in message and "does not fit on 1 x RTX4090" in message
    assert "ZeRO-3" in message.splitlines()[-1] and "QLoRA" not in message


def test_moe_estimate_uses_total_weights_and_active_activations() -> None:
    mixtral = facts("Mixtral-8x7B-v0.1")
    d = decide(mixtral, Hardware("H100-80G", 79.6, 8, True, "test"), Request())
    assert d.setup.zero == 3 and d.estimate.weights < 46.7e9 * 2 / 2**30 / 4  # sharded: no single GPU holds it
    assert "46.7B parameters (12.9B active: 2 of 8 experts)" in d.explain()


# -- through finetune.auto and the real backend classes --------------------------------------------------------------
class RecordedGpus(Launcher):
    """The GPUs of a recorded nvidia-smi output, as a launcher's topology (plans only: nothing is started)."""

    def __init__(self, line: str, n: int):
        self.gpus = parse_nvidia_smi("\n".join(line.format(i=i) for i in range(n)))

    def topology(self) -> Topology:
        g = self.gpus[0]
        return Topology(1, len(self.gpus), len(self.gpus), g.name, g.memory_total_gb)

    def submit(self, steps: Sequence, name: str):
        raise AssertionError("plan-only test")


def model_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(CONFIGS / f"{name}.json", folder / "config.json")
    return folder


def train_yaml(plan) -> dict:
    spec = next(f for f in plan.files if f.path.name == "train.yaml")
    return yaml.safe_load(spec.content)


def test_auto_72b_on_8_h100_plans_lora_with_zero3(tmp_path: Path, alpaca_file: Path, gpu_packages: str) -> None:
    trainer = finetune.auto(model_folder(tmp_path, "Qwen2.5-72B"), tmp_path / "out", launcher=RecordedGpus(H100, 8))
    assert trainer.backend == "llamafactory"
    plan = trainer.plan(alpaca_file)
    cfg = train_yaml(plan)
    assert cfg["deepspeed"]["zero_optimization"]["stage"] == 3
    assert (cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"]) == (4, 1)
    assert cfg["disable_gradient_checkpointing"] is False and cfg["cutoff_len"] == 1024 and cfg["lora_rank"] == 8
    assert "quantization_bit" not in cfg and cfg["bf16"] is True
    assert any("ZeRO-3" in n for n in plan.notes) and any(n.startswith("auto: estimate") for n in plan.notes)
    assert "8 x H100-80G" in trainer.explain() and "auto: " in str(plan)


def test_auto_14b_on_one_4090_plans_qlora_and_keeps_user_values(
    tmp_path: Path, alpaca_file: Path, gpu_packages: str
) -> None:
    trainer = finetune.auto(model_folder(tmp_path, "Qwen2.5-14B"), tmp_path / "out", launcher=RecordedGpus(RTX4090, 1),
                            per_device_train_batch_size=2, learning_rate=3e-4)  # fmt: skip
    cfg = train_yaml(trainer.plan(alpaca_file))
    assert cfg["quantization_bit"] == 4 and cfg["finetuning_type"] == "lora"
    assert (cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"]) == (2, 16)
    assert cfg["learning_rate"] == 3e-4
    assert "per_device_train_batch_size" not in trainer.chosen  # the user's value, passed through unchanged


def test_auto_prefers_configurations_whose_packages_are_installed(
    tmp_path: Path, alpaca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """72B on 8 H100: LoRA + ZeRO-3 is preferred, but without deepspeed QLoRA (bitsandbytes installed) is chosen and
    explain() says what the preferred one needs; with neither, the plan names the command that adds deepspeed."""
    from tests.conftest import python_with_packages

    only_bnb = python_with_packages(tmp_path, {"bitsandbytes": "0.50.2"})
    monkeypatch.setenv("LAZYTUNE_LLAMAFACTORY_PYTHON", only_bnb)
    model = model_folder(tmp_path, "Qwen2.5-72B")
    trainer = finetune.auto(model, tmp_path / "out", launcher=RecordedGpus(H100, 8))
    cfg = train_yaml(trainer.plan(alpaca_file))
    assert cfg["quantization_bit"] == 4 and "deepspeed" not in cfg
    assert "would fit and is preferred, but needs deepspeed" in trainer.explain()
    assert f"{only_bnb} -m pip install deepspeed" not in trainer.explain()
    bare = python_with_packages(tmp_path / "bare", {})
    monkeypatch.setenv("LAZYTUNE_LLAMAFACTORY_PYTHON", bare)
    trainer = finetune.auto(model, tmp_path / "out2", launcher=RecordedGpus(H100, 8))
    assert "needs deepspeed, which the backend's environment lacks" in trainer.explain()
    with pytest.raises(ConfigError, match=rf"needs the package deepspeed.*{bare} -m pip install deepspeed"):
        trainer.plan(alpaca_file)


def test_auto_errors_before_anything_runs(tmp_path: Path) -> None:
    model = model_folder(tmp_path, "Qwen2.5-72B")
    with pytest.raises(NothingFitsError, match="smallest configuration"):
        finetune.auto(model, tmp_path / "a", launcher=RecordedGpus(RTX4090, 1))
    with pytest.raises(UnknownOptionError, match="did you mean 'learning_rate'"):
        finetune.auto(model, tmp_path / "b", launcher=RecordedGpus(H100, 8), learning_rat=1e-4)
    with pytest.raises(ConfigError, match="did you mean 'llamafactory'"):
        finetune.auto(model, tmp_path / "c", launcher=RecordedGpus(H100, 8), backend="llamafactroy")
    with pytest.raises(ConfigError, match="not a multiple of the launcher's 3 GPU"):
        finetune.auto(model, tmp_path / "d", launcher=RecordedGpus(H100, 3))
    with pytest.raises(ConfigError, match="ngpus=2 but the launcher gives 8"):
        finetune.auto(model, tmp_path / "e", launcher=RecordedGpus(H100, 8), ngpus=2)


def test_auto_on_slurm_takes_the_gpu_type_from_the_user(tmp_path: Path) -> None:
    import launchers

    model = model_folder(tmp_path, "Qwen2.5-7B")
    slurm = launchers.slurm(partition="gpu", ngpus=4)
    trainer = finetune.auto(model, tmp_path / "out", launcher=slurm, gpu_type="A100-80G", ctx_len=4096)
    assert "4 x A100-80G" in trainer.explain() and trainer.decision.setup.ngpus == 4
    assert trainer.launcher is slurm


@pytest.mark.parametrize("name,ctx", [("bge-m3", 1024), ("bert-base-uncased", 512), ("bge-reranker-v2-m3", 1024)])
def test_auto_embedders_go_to_flagembedding(tmp_path: Path, name: str, ctx: int) -> None:
    trainer = finetune.auto(model_folder(tmp_path, name), tmp_path / "out", launcher=RecordedGpus(H100, 1))
    kind = "rerank" if "reranker" in name else "embed"
    assert trainer.backend == "flagembedding" and trainer.options["model_kind"] == kind
    assert trainer.decision.setup.method == "full" and trainer.options["passage_max_len"] == ctx
    o = trainer.options
    assert o["per_device_train_batch_size"] * o["gradient_accumulation_steps"] == 32
    assert ("passages are cut at 512" in trainer.explain()) == (ctx == 512)


# -- the real thing on CPU -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_auto_trains_a_tiny_llama_on_cpu_end_to_end(tmp_path: Path, alpaca_file: Path,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    """On CPU auto picks LoRA through LLaMA-Factory; the run is real (train + merge), shared tiny model."""
    import launchers
    from tests.helpers.models import ml_python, tiny_llama

    if not backend_installed("llamafactory"):
        pytest.skip("the llamafactory environment is not installed: run `lazytune env install llamafactory`")
    model = tiny_llama(tmp_path_factory.getbasetemp() / "models", ml_python("llamafactory"))
    trainer = finetune.auto(model, tmp_path / "out", ctx_len=64, batch_size=4, launcher=launchers.local(ngpus=0),
                            num_train_epochs=1, template="default", save_steps=1000)  # fmt: skip
    assert trainer.backend == "llamafactory" and trainer.decision.setup.ngpus == 0
    merged = Path(trainer(alpaca_file))
    assert (merged / "config.json").is_file() and any(merged.glob("*.safetensors"))
    manifest = json.loads((tmp_path / "out" / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED" and manifest["backend"] == "llamafactory"
    assert any(n.startswith("auto: choice") for n in manifest["plan"]["notes"])
    assert manifest["plan"]["options"]["per_device_train_batch_size"] == 4


def test_cli_plan_auto_prints_the_explanation(tmp_path: Path, alpaca_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from lazytune.cli import main

    model = model_folder(tmp_path, "Qwen2.5-0.5B")
    code = main(["plan", "auto", "--base", str(model), "--target", str(tmp_path / "out"), "--data", str(alpaca_file),
                 "--launcher", "local", "--ngpus", "0", "ctx_len=256", "batch_size=8", "learning_rate=2e-4"])
    out = capsys.readouterr().out
    assert code == 0 and "backend=llamafactory" in out and "auto: choice   : LoRA r=8 on CPU" in out
    assert "per_device_train_batch_size: 8" in out and "cutoff_len: 256" in out and "learning_rate: 0.0002" in out


def test_without_llamafactory_auto_falls_back_to_alpacalora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setenv("LAZYTUNE_HOME", str(tmp_path / "home"))  # no managed environment installed there
    monkeypatch.delenv("LAZYTUNE_LLAMAFACTORY_PYTHON", raising=False)
    monkeypatch.setenv("LAZYTUNE_ALPACALORA_PYTHON", sys.executable)
    if backend_installed("llamafactory"):
        pytest.skip("llamafactory is importable by this interpreter")
    model = model_folder(tmp_path, "Llama-2-7b-hf")
    (model / "tokenizer_config.json").write_text("{}")  # alpacalora checks that a tokenizer is there
    trainer = finetune.auto(model, tmp_path / "out", launcher=RecordedGpus(H100, 1))
    assert trainer.backend == "alpacalora" and "LLaMA-Factory is not installed" in trainer.explain()
    o = trainer.options
    assert (o["batch_size"], o["cutoff_len"], o["lora_r"]) == (32, 1024, 8)
    assert o["micro_batch_size"] == trainer.decision.setup.micro_batch and not trainer.decision.setup.checkpointing
    assert trainer.decision.setup.method == "lora"  # alpacalora has no quantization and no checkpointing switch


def test_vision_language_models_go_to_llamafactory(tmp_path: Path) -> None:
    trainer = finetune.auto(model_folder(tmp_path, "Qwen2-VL-7B-Instruct"), tmp_path / "out",
                            launcher=RecordedGpus(H100, 1), template="qwen2_vl")  # fmt: skip
    assert trainer.backend == "llamafactory" and trainer.facts.kind == "vlm"
    assert "vision tower counted approximately" in trainer.explain()


slurm_cluster = _cluster  # the real test cluster's partition (tests/slurm/start.sh), or a skip with the reason


@pytest.mark.slurm
def test_slurm_partition_gres_gives_the_gpu_count(tmp_path: Path, slurm_cluster: str) -> None:
    """The test cluster's nodes have untyped `gpu:2` gres: the count is read, the memory must be given."""
    import launchers
    from launchers.slurm import parse_gres
    from launchers.slurm import partition_gres as slurm_gres

    assert parse_gres(slurm_gres(slurm_cluster)) == (None, 2)
    model = model_folder(tmp_path, "Qwen2.5-7B")
    with pytest.raises(ConfigError, match="cannot tell the memory of GPU.*SLURM gres of partition.*pass gpu_type="):
        finetune.auto(model, tmp_path / "a", launcher=launchers.slurm(partition=slurm_cluster, ngpus=2))
    trainer = finetune.auto(model, tmp_path / "b", launcher=launchers.slurm(partition=slurm_cluster, ngpus=2),
                            gpu_memory_gb=40)  # fmt: skip
    assert trainer.decision.setup.ngpus == 2 and "2 x GPU with 40 GB each" in trainer.explain()
