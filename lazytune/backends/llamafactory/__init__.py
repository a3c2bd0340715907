"""LLaMA-Factory backend (`finetune.llamafactory`): options checked against LF's own keys (keys.py, keys.json), the
run's dataset_info.json (dataset_info.py), chat-template choice and tokenizer checks (templates.py), and the plan
builder (backend.py): `llamafactory-cli train` then a LoRA export."""

from .backend import LlamafactoryFinetune

__all__ = ["LlamafactoryFinetune"]
