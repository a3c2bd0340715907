"""lazytune: one interface for LLM fine-tuning over real backends, run locally or on SLURM.

    from lazytune import finetune, launchers
    merged = finetune.llamafactory("models/qwen", "runs/sft", learning_rate=2e-4)("data/train.json")
"""

from . import finetune
from . import launching as launchers
from .config import settings
from .errors import (
    ConfigError,
    DataError,
    LazytuneError,
    ModelNotFoundError,
    OptionsError,
    OptionTypeError,
    OutputMissingError,
    PlanWriteError,
    TargetExistsError,
    UnknownOptionError,
)
from .run import __version__

JobFailed = launchers.JobFailed

__all__ = [
    "ConfigError", "DataError", "JobFailed", "LazytuneError", "ModelNotFoundError", "OptionTypeError",
    "OptionsError", "OutputMissingError", "PlanWriteError", "TargetExistsError", "UnknownOptionError",
    "__version__", "finetune", "launchers", "settings",
]  # fmt: skip
