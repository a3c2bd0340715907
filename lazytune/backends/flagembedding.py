"""finetune.flagembedding: not implemented yet (issue 5)."""

from __future__ import annotations

from typing import Any


class FlagembeddingFinetune:
    """Placeholder until issue 5 lands: constructing it raises, never silently does nothing."""

    name = "flagembedding"

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("finetune.flagembedding is not implemented yet (issue 5)")
