"""Turn a single-process Python argv into a torchrun (torch.distributed.run) argv."""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence


def free_port(low: int = 19000, high: int = 20500, tries: int = 50) -> int:
    """A TCP port in [low, high] nobody listens on right now (random, so concurrent jobs rarely collide)."""
    for _ in range(tries):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def split_python_argv(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Split `[python, script.py | -m module, args...]` into the interpreter and what torchrun should start."""
    if len(argv) < 2:
        raise ValueError(f"a distributed step must be `python script.py ...` or `python -m module ...`, got {argv!r}")
    python, rest = argv[0], list(argv[1:])
    if rest[0] == "-m" and len(rest) < 2:
        raise ValueError(f"`-m` without a module in {argv!r}")
    return python, rest


def torchrun_argv(
    argv: Sequence[str],
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int | str = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | str | None = None,
) -> list[str]:
    """`python -m torch.distributed.run --nnodes ... <script | -m module> args` for a `python ...` argv."""
    python, rest = split_python_argv(argv)
    port = free_port() if master_port is None else master_port
    return [
        python, "-m", "torch.distributed.run",
        f"--nnodes={nnodes}", f"--nproc_per_node={nproc_per_node}", f"--node_rank={node_rank}",
        f"--master_addr={master_addr}", f"--master_port={port}",
        *rest,
    ]  # fmt: skip
