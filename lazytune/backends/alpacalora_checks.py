"""Plan-time checks for finetune.alpacalora: LoRA targets per architecture, prompt templates, alpaca records.

Everything here runs in the controller without torch/transformers, before any process starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data import detect_format, iter_records
from ..errors import ConfigError, DataError
from .base import SCRIPTS

TEMPLATES = SCRIPTS / "templates"

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


def model_type(model: Path) -> str | None:
    try:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def default_lora_targets(model: Path) -> list[str]:
    """The attention projections of `model`'s architecture; a ConfigError naming the way out when unknown."""
    kind = model_type(model)
    if kind in LORA_TARGETS:
        return list(LORA_TARGETS[kind])
    raise ConfigError(
        f"no default lora_target_modules for model_type {kind!r} ({model / 'config.json'}); "
        "pass lora_target_modules=[...] (names of the model's linear layers, e.g. 'q_proj,v_proj') or 'all-linear'"
    )


def find_template(name: str) -> Path:
    """A shipped template name (alpaca, alpaca_legacy, alpaca_short, puyu, vigogne) or a template JSON file's path."""
    shipped = sorted(p.stem for p in TEMPLATES.glob("*.json"))
    if name in shipped:
        return TEMPLATES / f"{name}.json"
    path = Path(name).expanduser()
    if path.suffix == ".json" and path.is_file():
        return path.resolve()
    raise ConfigError(
        f"unknown prompt_template_name {name!r}: use one of {', '.join(shipped)} "
        "or the path of a JSON file with 'prompt_input' and 'prompt_no_input'"
    )


def load_template(path: Path) -> dict[str, Any]:
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"prompt template {path}: cannot read it as JSON ({exc})") from None
    problems = []
    for key in ("prompt_input", "prompt_no_input"):
        text = template.get(key) if isinstance(template, dict) else None
        if not isinstance(text, str):
            problems.append(f"no {key!r} string")
        elif "{instruction}" not in text:
            problems.append(f"{key!r} has no {{instruction}} placeholder")
    if not problems and "{input}" not in template["prompt_input"]:
        problems.append("'prompt_input' has no {input} placeholder")
    if problems:
        raise ConfigError(f"prompt template {path}: {'; '.join(problems)}")
    return template


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
