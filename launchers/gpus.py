"""Which GPUs this machine has and which are free, from `nvidia-smi` (no CUDA library needed)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

QUERY = "index,uuid,name,memory.total,memory.used,memory.free"
NVIDIA_SMI_ARGV = ("nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits")
# compute_cap is known to drivers from 510 on; older ones refuse the whole query, so it is asked for separately.
CAP_QUERY = "index,compute_cap"
NVIDIA_SMI_CAP_ARGV = ("nvidia-smi", f"--query-gpu={CAP_QUERY}", "--format=csv,noheader,nounits")


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    compute_cap: float | None = None  # e.g. 8.0 for A100, 9.0 for H100; None when the driver does not say

    @property
    def memory_total_gb(self) -> float:
        return round(self.memory_total_mib / 1024, 1)


def _mib(text: str) -> int:
    text = text.strip()
    try:
        return int(float(text))
    except ValueError:  # "[N/A]" on some MIG / vGPU setups
        return 0


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """Parse the CSV of `nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`."""
    gpus = []
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6 or not parts[0].isdigit():
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        # A GPU name may itself contain commas: everything between uuid and the three numbers is the name.
        index, uuid, *name, total, used, free = parts
        gpus.append(Gpu(int(index), uuid, ", ".join(name), _mib(total), _mib(used), _mib(free)))
    return gpus


def parse_compute_caps(output: str) -> dict[int, float]:
    """{index: compute capability} from `nvidia-smi --query-gpu=index,compute_cap` ('[N/A]' lines left out)."""
    caps = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                caps[int(parts[0])] = float(parts[1])
            except ValueError:
                continue
    return caps


def _nvidia_smi(argv: Sequence[str], timeout: float) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def query_nvidia_smi(timeout: float = 20) -> list[Gpu]:
    """All GPUs nvidia-smi reports, with their compute capability where the driver gives it; [] where there is
    no nvidia-smi or it fails (no driver)."""
    out = _nvidia_smi(NVIDIA_SMI_ARGV, timeout)
    if out is None:
        return []
    gpus = parse_nvidia_smi(out)
    caps = parse_compute_caps(_nvidia_smi(NVIDIA_SMI_CAP_ARGV, timeout) or "") if gpus else {}
    return [dataclasses.replace(g, compute_cap=caps.get(g.index)) for g in gpus]


def visible(gpus: Sequence[Gpu], cuda_visible_devices: str | None) -> list[Gpu]:
    """The GPUs allowed by CUDA_VISIBLE_DEVICES (indices, `GPU-<uuid>` or unique uuid prefixes), in its order.

    As CUDA does, the list stops at the first entry that matches nothing; unset means all; empty means none.
    """
    if cuda_visible_devices is None:
        return list(gpus)
    chosen: list[Gpu] = []
    for item in (x.strip() for x in cuda_visible_devices.split(",")):
        if not item:
            break
        match = None
        if item.lstrip("-").isdigit():
            match = next((g for g in gpus if g.index == int(item)), None)
        else:
            candidates = [g for g in gpus if g.uuid.startswith(item) or g.uuid.startswith("GPU-" + item)]
            match = candidates[0] if len(candidates) == 1 else None
        if match is None or match in chosen:
            break
        chosen.append(match)
    return chosen


def pick(gpus: Sequence[Gpu], n: int) -> list[Gpu]:
    """The `n` GPUs with the most free memory (ties: lower index first), in index order. Fewer is an error."""
    if n > len(gpus):
        names = ", ".join(f"{g.index}:{g.name} ({g.memory_free_mib} MiB free)" for g in gpus) or "none"
        raise RuntimeError(f"asked for {n} GPU(s) but only {len(gpus)} visible: {names}")
    return sorted(sorted(gpus, key=lambda g: (-g.memory_free_mib, g.index))[:n], key=lambda g: g.index)


def cuda_visible_value(chosen: Sequence[Gpu], cuda_visible_devices: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value selecting `chosen`, in the same form (uuid or index) the user already used."""
    use_uuid = bool(cuda_visible_devices) and not cuda_visible_devices.split(",")[0].strip().isdigit()
    return ",".join(g.uuid if use_uuid else str(g.index) for g in chosen)


def available(environ: dict[str, str] | None = None) -> list[Gpu]:
    """The GPUs this process may use: nvidia-smi's list filtered by CUDA_VISIBLE_DEVICES."""
    environ = os.environ if environ is None else environ
    return visible(query_nvidia_smi(), environ.get("CUDA_VISIBLE_DEVICES"))
