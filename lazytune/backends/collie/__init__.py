"""CoLLiE backend (`finetune.collie`): lazytune's CoLLiE trainer script (scripts/collie_train.py) planned by
backend.py; GPU-only (CoLLiE needs CUDA)."""

from .backend import CollieFinetune, CollieNeedsGpuError

__all__ = ["CollieFinetune", "CollieNeedsGpuError"]
