"""Model facts from real config.json files, the GPU table and the memory model (no GPU, no backend needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from launchers import gpus as gpu_info
from launchers.slurm import parse_gres
from lazytune.backends.auto.gpu_table import gpu_type_or_error, hardware, lookup_gpu
from lazytune.backends.auto.memory import Setup, estimate
from lazytune.backends.auto.sizing import SizeWarning, facts_from_config, model_facts, parse_name_size
from lazytune.errors import ConfigError

CONFIGS = Path(__file__).parent / "fixtures" / "configs"

# Published parameter counts (model cards / safetensors index "total_size" / 2 bytes).
PUBLISHED = {
    "Llama-2-7b-hf": 6.738e9, "Meta-Llama-3-8B": 8.030e9, "Qwen2.5-0.5B": 0.494e9, "Qwen2.5-7B": 7.616e9,
    "Qwen2.5-14B": 14.770e9, "Qwen2.5-72B": 72.706e9, "Mixtral-8x7B-v0.1": 46.703e9, "Qwen3-8B": 8.191e9,
    "Qwen3-0.6B": 0.596e9, "Qwen3-30B-A3B": 30.532e9, "gemma-7b": 8.538e9, "gemma-2b": 2.506e9,
    "Phi-3-mini-4k-instruct": 3.821e9, "phi-2": 2.780e9, "internlm2-7b": 7.738e9, "chatglm3-6b": 6.244e9,
    "Baichuan2-7B-Base": 7.506e9, "Baichuan2-13B-Base": 13.897e9, "bert-base-uncased": 109.48e6,
    "xlm-roberta-base": 278.04e6, "bge-m3": 567.75e6, "bge-reranker-v2-m3": 567.75e6, "Qwen2-VL-7B-Instruct": 8.291e9,
}  # fmt: skip
ACTIVE = {"Mixtral-8x7B-v0.1": 12.88e9, "Qwen3-30B-A3B": 3.3e9}
KINDS = {"bert-base-uncased": "embed", "bge-m3": "embed", "bge-reranker-v2-m3": "rerank",
         "Qwen2-VL-7B-Instruct": "vlm", "Llama-2-7b-hf": "causal", "chatglm3-6b": "causal"}  # fmt: skip

# Recorded `nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free --format=csv,noheader,nounits`
NVIDIA_SMI = {
    "NVIDIA H100 80GB HBM3": ("H100-80G", 79.6), "NVIDIA H200": ("H200", 140.4),
    "NVIDIA A100-SXM4-40GB": ("A100-40G", 40.0), "NVIDIA A100-SXM4-80GB": ("A100-80G", 80.0),
    "NVIDIA A100 80GB PCIe": ("A100-80G", 80.0), "NVIDIA A800-SXM4-80GB": ("A800-80G", 80.0),
    "NVIDIA H800": ("H800", 79.6), "NVIDIA L40S": ("L40S", 45.0), "NVIDIA GeForce RTX 4090": ("RTX4090", 24.0),
    "Tesla V100-SXM2-32GB": ("V100-32G", 32.0), "Tesla V100-PCIE-16GB": ("V100-16G", 16.0),
}  # fmt: skip
THREE_4090 = """\
0, GPU-9f1e0000-0000-0000-0000-000000000000, NVIDIA GeForce RTX 4090, 24564, 300, 24264
1, GPU-9f1e0000-0000-0000-0000-000000000001, NVIDIA GeForce RTX 4090, 24564, 18000, 6564
2, GPU-9f1e0000-0000-0000-0000-000000000002, NVIDIA GeForce RTX 4090, 24564, 1, 24563
"""


def config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_within_one_percent(name: str) -> None:
    facts = facts_from_config(config(name), name)
    assert facts.params_total == pytest.approx(PUBLISHED[name], rel=0.01)
    assert facts.params_active == pytest.approx(ACTIVE.get(name, PUBLISHED[name]), rel=0.02)


@pytest.mark.parametrize("name,kind", sorted(KINDS.items()))
def test_model_kind(name: str, kind: str) -> None:
    assert facts_from_config(config(name), name).kind == kind


def test_shapes_gqa_tied_and_lora() -> None:
    qwen = facts_from_config(config("Qwen2.5-0.5B"), "q")
    assert (qwen.layers, qwen.hidden, qwen.kv_heads, qwen.vocab) == (24, 896, 2, 151936)
    assert qwen.params_embedding == 151936 * 896  # tied: the head is the embedding
    assert facts_from_config(config("Qwen2.5-7B"), "q").params_embedding == 2 * 152064 * 3584
    llama = facts_from_config(config("Llama-2-7b-hf"), "l")
    # rank 8 on q,k,v,o (4096x4096) and gate,up,down (4096x11008): 8 * sum(in + out) per layer
    assert llama.lora_params(8) == 32 * 8 * (4 * 8192 + 3 * (4096 + 11008))
    assert llama.dtype == "float16" and llama.dtype_bytes == 2
    assert facts_from_config(config("bge-m3"), "b").max_positions == 8192  # RoBERTa offset of 2


@pytest.mark.parametrize("name,expected", [
    ("Qwen2.5-0.5B-Instruct", (0.5e9, 0.5e9)), ("Qwen1.5-1.8B-Chat", (1.8e9, 1.8e9)), ("qwen-1_8b", (1.8e9, 1.8e9)),
    ("llama-2-7b-hf", (7e9, 7e9)), ("Qwen2.5-72B", (72e9, 72e9)), ("chatglm3-6b", (6e9, 6e9)),
    ("Mixtral-8x7B-v0.1", (56e9, 14e9)), ("Qwen3-30B-A3B", (30e9, 3e9)), ("SmolLM-360M", (360e6, 360e6)),
    ("bge-m3", None), ("Phi-3-mini-4k-instruct", None),
])  # fmt: skip
def test_parse_name_size(name: str, expected: tuple[float, float] | None) -> None:
    got = parse_name_size(name)
    assert got == (pytest.approx(expected) if expected else None)


def test_name_fallback_only_without_config_and_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "Qwen2.5-7B-Instruct"
    folder.mkdir()
    with pytest.warns(SizeWarning, match="guessed from the folder name"):
        facts = model_facts(folder)
    assert facts.source == "name" and facts.params_total == 7e9
    shutil.copy(CONFIGS / "Qwen2.5-0.5B.json", folder / "config.json")  # config.json wins over the name
    assert model_facts(folder).params_total == pytest.approx(0.494e9, rel=0.01)
    (tmp_path / "nosize").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        model_facts(tmp_path / "nosize")
    (tmp_path / "nosize" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match="cannot size the model"):
        model_facts(tmp_path / "nosize")


@pytest.mark.parametrize("smi_name", sorted(NVIDIA_SMI))
def test_gpu_table_matches_nvidia_smi_names(smi_name: str) -> None:
    gpu = lookup_gpu(smi_name)
    assert gpu is not None and (gpu.name, gpu.memory_gb) == NVIDIA_SMI[smi_name]


def test_gpu_type_typo_is_an_error_with_did_you_mean() -> None:
    assert gpu_type_or_error("a100-80g").name == "A100-80G"
    assert gpu_type_or_error("a100").name == "A100-40G"  # ambiguous: the smaller one
    with pytest.raises(ConfigError, match="did you mean 'L40S'"):
        gpu_type_or_error("L4OS")
    with pytest.raises(ConfigError, match="unknown gpu_type"):
        gpu_type_or_error("tpu-v5")


def test_parse_slurm_gres() -> None:
    assert parse_gres("gpu:a100:8(S:0-1)") == ("a100", 8)
    assert parse_gres("gpu:4") == (None, 4)
    assert parse_gres("craynetwork:4,gpu:h100:8") == ("h100", 8)
    assert parse_gres("(null)") == (None, None)


def test_hardware_from_recorded_nvidia_smi_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_info, "query_nvidia_smi", lambda timeout=20: gpu_info.parse_nvidia_smi(THREE_4090))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    hw = hardware(None)  # GPU 1 is mostly in use: left out; the others are sized by their free memory
    assert (hw.name, hw.count, hw.memory_gb, hw.device) == ("RTX4090", 2, 24264 / 1024, "cuda")
    assert "1 GPU(s) mostly in use left out" in hw.describe()
    assert hardware(None, ngpus=1).count == 1
    hw = hardware(None, gpu_type="H100", ngpus=8)
    assert (hw.name, hw.memory_gb, hw.count) == ("H100-80G", 79.6, 8)
    assert hardware(None, gpu_memory_gb=20).memory_gb == 20
    assert hardware(None, gpu_type="cpu").count == 0
    monkeypatch.setattr(gpu_info, "query_nvidia_smi", lambda timeout=20: [])
    assert hardware(None).device == "cpu"


def _setup(**kw) -> Setup:
    base = dict(method="lora", ngpus=1, micro_batch=1, grad_accum=1, checkpointing=True, zero=0, ctx_len=1024)
    return Setup(**{**base, **kw})


def test_memory_model_parts() -> None:
    f = facts_from_config(config("Llama-2-7b-hf"), "l")
    lora = estimate(f, _setup())
    assert lora.weights == pytest.approx(6.738e9 * 2 / 2**30, rel=1e-3)  # bf16
    assert lora.trainable == pytest.approx(f.lora_params(8) * 16 / 2**30)  # fp32 weights + grads + AdamW
    assert estimate(f, _setup(method="qlora")).weights < lora.weights / 3
    sharded = estimate(f, _setup(ngpus=8, zero=3))
    assert lora.weights / 8 < sharded.weights < lora.weights / 4  # 1/8 of the weights + two gathered layers
    plain = estimate(f, _setup(checkpointing=False))
    assert plain.activations > 10 * lora.activations
    assert estimate(f, _setup(micro_batch=4)).activations == pytest.approx(4 * lora.activations, rel=0.01)
    assert estimate(f, _setup(ctx_len=8192)).logits == pytest.approx(8 * lora.logits)
    assert estimate(f, _setup(ngpus=0, compute_bytes=4)).weights == pytest.approx(2 * lora.weights)
