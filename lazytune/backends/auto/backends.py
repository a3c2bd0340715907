"""What `finetune.auto` knows about the backends it drives: where each part of a decision goes in a backend's own
options, whether a backend is installed, the DeepSpeed configs, and which backend a model goes to."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...resources import configs_dir
from ..base import Finetune
from .sizing import ModelFacts


@dataclass(frozen=True)
class Keys:
    """Where each part of a decision goes in one backend's options (None: the backend has no such knob)."""

    module: str  # what the backend's environment must be able to import
    micro_batch: str
    grad_accum: str | None = None
    global_batch: str | None = None
    ctx_len: str = "cutoff_len"
    lora_r: str | None = None
    checkpointing: str | None = None
    checkpointing_off: bool = False  # the key disables checkpointing (LLaMA-Factory) instead of enabling it
    method: str | None = None
    quantization: str | None = None
    deepspeed: str | None = None
    zero_stages: tuple[int, ...] = (0,)


DRIVEN = {
    "llamafactory": Keys("llamafactory", "per_device_train_batch_size",
                         "gradient_accumulation_steps", lora_r="lora_rank",
                         checkpointing="disable_gradient_checkpointing", checkpointing_off=True,
                         method="finetuning_type", quantization="quantization_bit", deepspeed="deepspeed",
                         zero_stages=(0, 2, 3)),
    "alpacalora": Keys("peft", "micro_batch_size", global_batch="batch_size",
                       lora_r="lora_r"),
    "flagembedding": Keys("FlagEmbedding", "per_device_train_batch_size",
                          "gradient_accumulation_steps", ctx_len="passage_max_len",
                          checkpointing="gradient_checkpointing"),
}  # fmt: skip


def backend_class(name: str) -> type[Finetune]:
    """The trainer class of a backend auto drives, from the one registry (`lazytune.finetune`)."""
    from ... import finetune  # at call time: finetune imports this package

    return getattr(finetune, name)


def backend_installed(name: str) -> bool:
    """Whether the backend can run here: its managed env, LAZYTUNE_<NAME>_PYTHON, or this interpreter has it."""
    from ... import envs

    if os.environ.get(envs.python_variable(name)) or envs.read_stamp(name) is not None:
        return True
    return importlib.util.find_spec(DRIVEN[name].module) is not None


def deepspeed_config(stage: int) -> dict[str, Any]:
    """LLaMA-Factory's DeepSpeed ZeRO-2/3 config (configs/deepspeed/), inlined into the backend's YAML."""
    name = f"ds_z{stage}_config.json"
    return json.loads((configs_dir() / "deepspeed" / name).read_text(encoding="utf-8"))


def zero_stage(value: Any) -> int:
    """The ZeRO stage of a `deepspeed=` value the user passed (a dict, or a JSON file path)."""
    config = value
    if isinstance(value, (str, os.PathLike)):
        try:
            config = json.loads(Path(value).expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"deepspeed={str(value)!r}: cannot read the DeepSpeed config: {exc}") from None
    try:
        return int(config.get("zero_optimization", {}).get("stage", 0))
    except (AttributeError, TypeError, ValueError):
        raise ConfigError(f"deepspeed={value!r}: expected a DeepSpeed config (dict or JSON file)") from None


def choose_backend(facts: ModelFacts, asked: str | None) -> tuple[str, str]:
    """(backend, why): embedders -> flagembedding; LLMs and VLMs -> llamafactory (alpacalora when LF is missing)."""
    if asked is not None:
        if asked not in DRIVEN:
            close = difflib.get_close_matches(str(asked), DRIVEN, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"backend={asked!r} is not one auto can drive{hint} Choose from {', '.join(DRIVEN)}")
        return asked, f"backend {asked}: as you asked"
    if facts.kind in ("embed", "rerank"):
        return "flagembedding", f"backend flagembedding: {facts.name} is an {facts.kind} model ({facts.model_type})"
    if facts.kind == "vlm":
        return "llamafactory", "backend llamafactory: vision-language models are trained by LLaMA-Factory only"
    if backend_installed("llamafactory") or not backend_installed("alpacalora"):
        return "llamafactory", "backend llamafactory: LoRA/QLoRA, gradient checkpointing and DeepSpeed all available"
    return "alpacalora", ("backend alpacalora: LLaMA-Factory is not installed (`lazytune env install llamafactory`), "
                          "lazytune's alpaca-lora trainer is")  # fmt: skip
