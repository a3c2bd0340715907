"""The keys LLaMA-Factory accepts, as lazytune options.

`configs/llama_factory/keys.json` is generated from the installed LLaMA-Factory by lazytune/scripts/lf_keys.py
(a test checks it still matches). It gives every key's type, LF default, choices and help; this module turns it
into an `OptionSpec`, so `finetune.llamafactory(..., lora_rnak=8)` fails with "did you mean 'lora_rank'" before any
process starts, and values are coerced to the type LF expects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError
from ...options import ChoiceOption, Option, OptionSpec
from ...resources import configs_dir

#: Keys lazytune fills in itself, with what to use instead.
MANAGED = {
    "model_name_or_path": "pass the model folder as base_model",
    "output_dir": "pass target_path (the adapter goes to <target>/lazyllm_lora)",
    "export_dir": "pass merge_path (default <target>/lazyllm_merge)",
    "dataset": "pass the data files when calling the trainer: trainer('data.json')",
    "dataset_dir": "pass the data files when calling the trainer: trainer('data.json')",
    "eval_dataset": "pass the evaluation files when calling the trainer: trainer('train.json', 'val.json') (or "
                    "val_size to split the training data)",
    "adapter_name_or_path": "not supported for training by lazytune yet (the export step sets it)",
    "do_train": "always true for training",
}

#: LazyLLM's spellings.
ALIASES = {"lora_rank": ("lora_r",), "additional_target": ("modules_to_save",), "lora_target": ("lora_target_modules",)}

#: Options of lazytune's own (not LLaMA-Factory keys).
OWN_OPTIONS = (
    Option("validate_data", bool, None, "no effect: every record of every data file is read when planning (the "
           "scan is cached, so re-planning an unchanged file is instant)"),
    Option("strict_data", bool, False, "fail before training when LLaMA-Factory would skip any record (bad role "
           "order, ...) instead of noting it in the plan"),
)  # fmt: skip

#: Lower bounds LF leaves to a crash deep in training (inclusive).
MINIMUM = {
    "learning_rate": 0, "num_train_epochs": 0, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1, "lora_rank": 1, "lora_alpha": 0, "lora_dropout": 0, "cutoff_len": 1,
    "max_samples": 1, "warmup_steps": 0, "logging_steps": 0, "save_steps": 0, "weight_decay": 0, "max_grad_norm": 0,
    "max_steps": -1, "val_size": 0, "freeze_trainable_layers": -1000, "pref_beta": 0, "quantization_bit": 2,
}  # fmt: skip

#: Stages we accept: LF's, plus `orpo` (LF runs it as stage dpo with pref_loss orpo).
EXTRA_STAGES = ("orpo",)
TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict, "any": object}


def config_dir() -> Path:
    """The folder holding sft.yaml, lora_export.yaml and keys.json."""
    return configs_dir() / "llama_factory"


def lf_keys() -> dict[str, Any]:
    """The parsed keys.json (train keys, export keys, templates, model -> template table, versions)."""
    return json.loads((config_dir() / "keys.json").read_text(encoding="utf-8"))


def load_yaml(path: Path | str, what: str = "config") -> dict[str, Any]:
    """A YAML mapping from `path`; ConfigError naming the file when it is missing or not a mapping."""
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a YAML mapping of key: value, got {type(data).__name__}")
    return data


def is_csv_key(entry: dict[str, Any]) -> bool:
    """A str key LF splits on commas (its help says so): we accept a list or 'a,b' and write 'a,b'."""
    return entry["type"] == "str" and "comma" in entry.get("help", "").lower() and "choices" not in entry


def option_spec(keys: dict[str, Any] | None = None) -> OptionSpec:
    """Every LF training key (minus MANAGED) as an Option, plus lazytune's own options."""
    keys = keys or lf_keys()
    options: list[Option] = list(OWN_OPTIONS)
    for name, entry in keys["train"].items():
        if name in MANAGED:
            continue
        kind = list if is_csv_key(entry) else TYPES.get(entry["type"], object)
        help_text = entry.get("help", "")
        aliases = ALIASES.get(name, ())
        choices = entry.get("choices")
        if name == "stage":
            choices = [*choices, *EXTRA_STAGES]
        cls = ChoiceOption if choices else Option
        choices = tuple(choices) if choices else None
        options.append(cls(name, kind, None, help_text, aliases, choices, MINIMUM.get(name)))
    return OptionSpec("llamafactory", options)


def managed_problems(values: dict[str, Any], source: str = "") -> list[str]:
    """One message per key in `values` that lazytune sets itself."""
    where = f" (in {source})" if source else ""
    return [f"{key!r}{where} is set by lazytune: {MANAGED[key]}" for key in values if key in MANAGED]


def export_keys(keys: dict[str, Any] | None = None) -> set[str]:
    """Keys `llamafactory-cli export` accepts."""
    return set((keys or lf_keys())["export"])
