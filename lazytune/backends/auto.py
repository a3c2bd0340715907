"""finetune.auto: not implemented yet (issue 7)."""

from __future__ import annotations

from typing import Any


class AutoFinetune:
    """Placeholder until issue 7 lands: constructing it raises, never silently does nothing."""

    name = "auto"

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("finetune.auto is not implemented yet (issue 7)")
