"""Plan-time checks for finetune.alpacalora: LoRA targets per architecture, prompt templates, alpaca records.

Everything here runs in the controller without torch/transformers, before any process starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...data import detect_format, iter_records
from ...errors import ConfigError, DataError
from ...model import ModelFolder

#: Default `lora_target_modules` per Hugging Face `model_type` (the attention projections, as alpaca-lora does).
LORA_TARGETS: dict[str, list[str]] = {
    **dict.fromkeys(
        ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
         "internlm", "yi", "deepseek", "phi", "opt", "gptj", "starcoder2", "olmo", "olmo2", "cohere", "stablelm",
         "granite", "smollm3"),
        ["q_proj", "v_proj"],
    ),  # fmt: skip
    "internlm2": ["wqkv", "wo"],
    "internlm3": ["q_proj", "v_proj"],
    "baichuan": ["W_pack"],
    "chatglm": ["query_key_value"],
    "glm": ["query_key_value"],
    "qwen": ["c_attn"],
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "bloom": ["query_key_value"],
    "falcon": ["query_key_value"],
    "phi3": ["qkv_proj"],
}


def default_lora_targets(model: ModelFolder | Path) -> list[str]:
    """The attention projections of `model`'s architecture; a ConfigError naming the way out when unknown."""
    model = ModelFolder.of(model)
    kind = model.model_type
    if kind in LORA_TARGETS:
        return list(LORA_TARGETS[kind])
    raise ConfigError(
        f"no default lora_target_modules for model_type {kind!r} ({model.config_path}); "
        "pass lora_target_modules=[...] (names of the model's linear layers, e.g. 'q_proj,v_proj') or 'all-linear'"
    )


def min_prompt_tokens(template: dict[str, Any]) -> int:
    """A lower bound on the tokens of any prompt: the template's fixed words (each is at least one token)."""
    fixed = template["prompt_no_input"].replace("{instruction}", " ")
    return len(fixed.split())


def check_records(files: list[Path]) -> int:
    """Stream every record: each needs string 'instruction' and 'output' ('input' optional). Returns the count."""
    count = 0
    for path in files:
        if detect_format(path) == "text":
            raise DataError("alpacalora needs JSON records (instruction, input, output), not plain text", path)
        before = count
        for line, rec in iter_records(path):
            missing = [k for k in ("instruction", "output") if k not in rec]
            if missing:
                keys = ", ".join(sorted(map(str, rec))) or "none"
                raise DataError(
                    f"record has no {' and no '.join(map(repr, missing))} (alpaca records need 'instruction' and "
                    f"'output', 'input' optional; this one has: {keys})", path, line,
                )  # fmt: skip
            for key in ("instruction", "output", "input"):
                value = rec.get(key)
                if not (isinstance(value, str) or (key == "input" and value is None)):
                    raise DataError(f"{key!r} must be a string, got {type(value).__name__}", path, line)
            count += 1
        if count == before:
            raise DataError("no records (an empty array or only blank lines)", path)
    return count
