"""The `finetune` namespace: one callable per backend.

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
