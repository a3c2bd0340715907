"""`finetune.auto`: picks a backend and its parameters from the model and the hardware, and says why.

sizing.py (model facts: parameters, layers, kind), gpu_table.py (known GPUs, what the launcher's hardware is),
memory.py (the memory model), decide.py (the pure decision), backends.py (where a decision goes in each backend's
options, which backend a model goes to), backend.py (AutoFinetune, which delegates to the chosen trainer)."""

from .backend import AutoFinetune

__all__ = ["AutoFinetune"]
