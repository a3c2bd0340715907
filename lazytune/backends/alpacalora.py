"""finetune.alpacalora: not implemented yet (issue 4)."""

from __future__ import annotations

from typing import Any


class AlpacaloraFinetune:
    """Placeholder until issue 4 lands: constructing it raises, never silently does nothing."""

    name = "alpacalora"

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("finetune.alpacalora is not implemented yet (issue 4)")
