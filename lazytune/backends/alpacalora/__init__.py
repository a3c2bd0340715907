"""alpaca-lora backend (`finetune.alpacalora`): lazytune's alpaca-lora style trainer (scripts/alpacalora_train.py)
driven by backend.py; prompt templates, LoRA targets and data checks in checks.py."""

from .backend import AlpacaloraFinetune

__all__ = ["AlpacaloraFinetune"]
