"""The `finetune` namespace, and the one registry of trainers: one callable per backend (finetune.auto looks the
backend it chose up here).

    trainer = finetune.llamafactory(base_model, target_path, learning_rate=2e-4)
    merged = trainer("data/train.json")
"""

from .backends.alpacalora import AlpacaloraFinetune as alpacalora
from .backends.auto import AutoFinetune as auto
from .backends.collie import CollieFinetune as collie
from .backends.dummy import DummyFinetune as dummy
from .backends.flagembedding import FlagembeddingFinetune as flagembedding
from .backends.llamafactory import LlamafactoryFinetune as llamafactory

__all__ = ["alpacalora", "auto", "collie", "dummy", "flagembedding", "llamafactory"]
