"""The `finetune` namespace, and the one registry of trainers: one callable per backend (finetune.auto looks the
backend it chose up here).

    trainer = finetune.llamafactory(base_model, target_path, learning_rate=2e-4)
    merged = trainer("data/train.json")

LazyLLM's class names (`finetune.LlamafactoryFinetune`, ...) are the same callables.
"""

from .backends.alpacalora import AlpacaloraFinetune as alpacalora
from .backends.auto import AutoFinetune as auto
from .backends.collie import CollieFinetune as collie
from .backends.dummy import DummyFinetune as dummy
from .backends.flagembedding import FlagembeddingFinetune as flagembedding
from .backends.llamafactory import LlamafactoryFinetune as llamafactory

# LazyLLM's class names (lazyllm/components/finetune/__init__.py, base.py, components/auto/autofinetune.py)
AlpacaloraFinetune = alpacalora
AutoFinetune = auto
CollieFinetune = collie
DummyFinetune = dummy
FlagembeddingFinetune = flagembedding
LlamafactoryFinetune = llamafactory

__all__ = [
    "AlpacaloraFinetune", "AutoFinetune", "CollieFinetune", "DummyFinetune", "FlagembeddingFinetune",
    "LlamafactoryFinetune", "alpacalora", "auto", "collie", "dummy", "flagembedding", "llamafactory",
]  # fmt: skip

#: LazyLLM finetune names with no lazytune backend, and what to use instead.
_NOT_HERE = {
    "easyr1": "LazyLLM's EasyR1 (GRPO) trainer", "EasyR1Finetune": "LazyLLM's EasyR1 (GRPO) trainer",
    "easyllm": "LazyLLM's EasyLLM trainer", "LazyLLMFinetuneBase": "LazyLLM's base class",
}  # fmt: skip


def __getattr__(name: str) -> object:
    """A clear AttributeError for LazyLLM's finetune names that lazytune does not have."""
    if name in _NOT_HERE:
        raise AttributeError(f"finetune.{name} ({_NOT_HERE[name]}) has no lazytune backend; lazytune has "
                             f"{', '.join(n for n in __all__ if n.islower())} (subclass lazytune.backends.base."
                             "Finetune for your own)")
    raise AttributeError(f"module 'lazytune.finetune' has no attribute {name!r}")
