"""The launcher interface every launcher (local, slurm, remote) implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from .job import Job, Step


@dataclass(frozen=True)
class Topology:
    """Where a job's processes will run: what a plan needs to know about the hardware before it is built."""

    nnodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    compute_capability: float | None = None  # of the GPUs (8.0 and up compute in bf16); None: not known

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_node > 0 else "cpu"

    def describe(self) -> str:
        where = f"{self.gpus_per_node} x {self.gpu_name or 'GPU'}" if self.gpus_per_node else "CPU"
        return f"{self.nnodes} node(s) x {self.nproc_per_node} process(es), {where} per node"


class Launcher(abc.ABC):
    """Runs a list of steps in order somewhere; stops at the first failure.

    `sync=True` (default): `run` waits and raises `JobFailed` on failure. `sync=False`: `run` returns the Job at once.
    """

    sync: bool = True

    @abc.abstractmethod
    def topology(self) -> Topology:
        """The nodes, processes and GPUs a job of this launcher gets."""

    @abc.abstractmethod
    def submit(self, steps: Sequence[Step], name: str) -> Job:
        """Start the steps and return at once."""

    def problems(self) -> list[str]:
        """What makes this launcher unable to run a job as configured (checked when a plan is made); [] when fine."""
        return []

    def run(self, steps: Sequence[Step], name: str) -> Job:
        """Start the steps; wait for them when this launcher is synchronous."""
        job = self.submit(steps, name)
        if self.sync:
            job.wait()
        return job
