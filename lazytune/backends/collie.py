"""finetune.collie: not implemented yet (issue 8)."""

from __future__ import annotations

from typing import Any


class CollieFinetune:
    """Placeholder until issue 8 lands: constructing it raises, never silently does nothing."""

    name = "collie"

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("finetune.collie is not implemented yet (issue 8)")
