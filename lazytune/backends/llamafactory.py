"""finetune.llamafactory: not implemented yet (issue 3)."""

from __future__ import annotations

from typing import Any


class LlamafactoryFinetune:
    """Placeholder until issue 3 lands: constructing it raises, never silently does nothing."""

    name = "llamafactory"

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("finetune.llamafactory is not implemented yet (issue 3)")
