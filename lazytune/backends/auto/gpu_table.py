"""GPU facts for `finetune.auto`: a table of known GPUs, and what the launcher's hardware is.

Local launchers report the GPUs nvidia-smi lists (name and total memory); SLURM jobs get the partition's gres type
(`sinfo -o %G`, e.g. `gpu:a100:8`) looked up in the table. `gpu_type=`, `gpu_memory_gb=` and `ngpus=` override.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from launchers import Launcher, Topology
from launchers import gpus as gpu_info
from launchers.slurm import parse_gres, partition_gres

from ...errors import ConfigError

BUSY_FREE_FRACTION = 0.5  # a local GPU with less than half its memory free is taken as in use by someone else


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gb: float  # GiB, as nvidia-smi reports total memory (MiB / 1024)
    bf16: bool
    patterns: tuple[str, ...]  # regexes over the normalised name ("nvidia a100-sxm4-80gb" -> "a100sxm480gb")
    compute_cap: float | None = None  # CUDA compute capability (bf16 from 8.0 up)


# The first match wins: specific patterns (a100.*80g) come before general ones (a100).
KNOWN_GPUS: tuple[GpuType, ...] = (
    GpuType("H200", 140.4, True, (r"h200",), 9.0),
    GpuType("H100-80G", 79.6, True, (r"h100",), 9.0),
    GpuType("H800", 79.6, True, (r"h800",), 9.0),
    GpuType("A100-80G", 80.0, True, (r"a100.*80g",), 8.0),
    GpuType("A100-40G", 40.0, True, (r"a100",), 8.0),  # a bare "a100" is taken as the smaller one (the safe guess)
    GpuType("A800-40G", 40.0, True, (r"a800.*40g",), 8.0),
    GpuType("A800-80G", 80.0, True, (r"a800",), 8.0),  # the common A800 is the 80 GB one
    GpuType("L40S", 45.0, True, (r"l40s",), 8.9),
    GpuType("L40", 45.0, True, (r"l40",), 8.9),
    GpuType("A6000", 48.0, True, (r"a6000",), 8.6),
    GpuType("A10", 22.5, True, (r"a10g?$", r"a10g?[^0-9]"), 8.6),
    GpuType("RTX4090", 24.0, True, (r"4090",), 8.9),
    GpuType("RTX3090", 24.0, True, (r"3090",), 8.6),
    GpuType("V100-32G", 32.0, False, (r"v100.*32g",), 7.0),
    GpuType("V100-16G", 16.0, False, (r"v100",), 7.0),
    GpuType("T4", 15.0, False, (r"t4$", r"t4[^0-9]"), 7.5),
)


# bf16-capable families (Ampere and newer) for GPUs the table does not list by name.
BF16_NAMES = re.compile(r"A100|A800|H100|H800|H200|H20\b|GH200|B100|B200|GB200|L40|L20|\bL4\b|A10|A30|A40|A6000|"
                        r"RTX ?(30|40|50)\d\d|RTX A\d000|RTX \d000 Ada|Ada", re.IGNORECASE)  # fmt: skip


def supports_bf16(gpu_name: str | None) -> bool:
    """Whether a GPU (as nvidia-smi, a SLURM gres or a user names it) computes in bf16; False for None (CPU)."""
    return bool(bf16_by_name(gpu_name))


def bf16_by_name(gpu_name: str | None) -> bool | None:
    """bf16 support told from a GPU's name alone: the table, then the names of bf16 families; None when the name
    says nothing (an unknown or future card must not silently get fp16: ask its compute capability instead)."""
    if not gpu_name:
        return None
    known = lookup_gpu(gpu_name)
    if known:
        return known.bf16
    if BF16_NAMES.search(gpu_name):
        return True
    if re.search(r"V100|T4\b|P100|P40|P4\b|K80|GTX|RTX ?20\d\d|Quadro RTX", gpu_name, re.IGNORECASE):
        return False  # Volta, Turing, Pascal, Kepler: no bf16 units
    return None


def gpu_precision(topo: Topology, what: str = "this run", required: bool = True) -> str | None:
    """'bf16' or 'fp16' for the GPUs of a launcher (None on CPU): bf16 from compute capability 8.0 (Ampere) up.

    The capability comes from nvidia-smi (local) or a node (SLURM); without it, from the GPU's name. A GPU nothing
    is known about is an error (`required`; else None: the training script decides from the GPU it runs on):
    guessing fp16 would run an A100 in fp16, guessing bf16 would emulate it on a T4.
    """
    if topo.device == "cpu":
        return None
    if topo.compute_capability is not None:
        return "bf16" if topo.compute_capability >= 8.0 else "fp16"
    by_name = bf16_by_name(topo.gpu_name)
    if by_name is None and not required:
        return None
    if by_name is None:
        what_gpu = f"GPU {topo.gpu_name!r}" if topo.gpu_name else "the GPUs (SLURM gres without a type)"
        raise ConfigError(
            f"cannot tell whether {what_gpu} compute in bf16 for {what}: no compute capability was reported and "
            "the name is not known. Pass bf16=True (compute capability 8.0 and up: A100, H100, L40, RTX 30xx/40xx) "
            "or fp16=True (V100, T4 and older), or name the GPU type (launchers.slurm(gpu_type='a100', ...))"
        )
    return "bf16" if by_name else "fp16"


def _normalise(name: str) -> str:
    text = name.lower()
    for word in ("nvidia", "geforce", "tesla", "rtx", "pcie", "sxm5", "sxm4", "sxm2", "hbm3e", "hbm3", "nvl"):
        text = text.replace(word, " ")
    return re.sub(r"[\s_-]+", "", text)


def lookup_gpu(name: str) -> GpuType | None:
    """The table entry for a GPU name as nvidia-smi, SLURM gres or a user writes it; None when unknown."""
    norm = _normalise(name)
    for gpu in KNOWN_GPUS:
        if any(re.search(p, norm) for p in gpu.patterns):
            return gpu
    return None


def gpu_type_or_error(name: str) -> GpuType:
    """`lookup_gpu` for the user's `gpu_type=`: an unknown name is an error with the close known ones."""
    gpu = lookup_gpu(name)
    if gpu is None:
        names = [g.name for g in KNOWN_GPUS]
        close = difflib.get_close_matches(name.upper(), names, n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown gpu_type {name!r}{hint} Known: {', '.join(sorted(names))}, or 'cpu'. "
                          "For another GPU pass gpu_memory_gb= as well.")  # fmt: skip
    return gpu


@dataclass(frozen=True)
class Hardware:
    """The GPUs a run may use. `count=0` is CPU; then `memory_gb` is the machine's RAM."""

    name: str
    memory_gb: float
    count: int
    bf16: bool
    source: str  # where the facts came from, for the explanation
    count_fixed: bool = False  # the launcher decides the number of GPUs (auto can't choose fewer)

    @property
    def device(self) -> str:
        return "cuda" if self.count else "cpu"

    def describe(self) -> str:
        if not self.count:
            return f"CPU only, {self.memory_gb:.0f} GB RAM ({self.source})"
        return f"{self.count} x {self.name} with {self.memory_gb:.0f} GB each ({self.source})"


def _ram_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 1024**3


def _local_gpus() -> tuple[str | None, float | None, int, str]:
    """This machine's GPUs that are mostly free (the local launcher picks the freest), sized by their free memory."""
    found = gpu_info.available()
    if not found:
        return None, None, 0, "no GPU found by nvidia-smi"
    free = [g for g in found if g.memory_free_mib >= BUSY_FREE_FRACTION * g.memory_total_mib]
    source = "nvidia-smi, free memory"
    if len(free) < len(found):
        source += f"; {len(found) - len(free)} GPU(s) mostly in use left out"
    if not free:
        return found[0].name, None, 0, source
    return free[0].name, min(g.memory_free_mib for g in free) / 1024, len(free), source


def _from_topology(topo: Topology, launcher: Launcher | None) -> tuple[str | None, float | None, int, str]:
    count = topo.gpus_per_node * topo.nnodes
    if not count:
        return None, None, 0, "the launcher has no GPU"
    if topo.gpu_name:
        return topo.gpu_name, topo.gpu_memory_gb, count, "nvidia-smi"
    # A SLURM launcher's topology asked sinfo for the partition's gres already: no GPU type there (not asked twice).
    partition = getattr(getattr(launcher, "resources", None), "partition", None)
    return None, None, count, f"SLURM gres of partition {partition or '(default)'}"


def hardware(launcher: Launcher | None, gpu_type: str | None = None, gpu_memory_gb: float | None = None,
             ngpus: int | None = None, default_launcher: str = "local", partition: str | None = None) -> Hardware:
    """The hardware a run gets: from the launcher (or, with none, this machine's GPUs or the default SLURM
    partition's gres), then the overrides."""
    cap = None
    if launcher is not None:
        topo = launcher.topology()
        name, memory, count, source = _from_topology(topo, launcher)
        cap, fixed = topo.compute_capability, True
    elif default_launcher not in ("local", "empty"):
        name, count = parse_gres(partition_gres(partition))
        memory, count, fixed = None, count or 0, False
        source = f"SLURM gres of partition {partition or '(default)'}"
    else:
        name, memory, count, source = _local_gpus()
        fixed = False
    if ngpus is not None:
        if not isinstance(ngpus, int) or isinstance(ngpus, bool) or ngpus < 0:
            raise ConfigError(f"ngpus must be a whole number >= 0, got {ngpus!r}")
        if fixed and ngpus != count:
            raise ConfigError(f"ngpus={ngpus} but the launcher gives {count} GPU(s): set the GPUs on the launcher")
        count, source = ngpus, source if count == ngpus else "ngpus="
    if gpu_type is not None and gpu_type.strip().lower() == "cpu":
        return Hardware("CPU", gpu_memory_gb or _ram_gb(), 0, False, "gpu_type='cpu'", fixed)
    known = gpu_type_or_error(gpu_type) if gpu_type is not None else (lookup_gpu(name) if name else None)
    if known is not None and gpu_type is not None:
        name, source = known.name, "gpu_type="
    if not count:
        return Hardware("CPU", gpu_memory_gb or _ram_gb(), 0, False, source, fixed)
    if gpu_memory_gb is not None:
        memory, source = float(gpu_memory_gb), source + ", gpu_memory_gb="
    elif memory is None or gpu_type is not None:
        if known is None:
            raise ConfigError(f"cannot tell the memory of GPU {name or '(unknown type)'} ({source}): "
                              "pass gpu_type= (e.g. 'A100-80G') or gpu_memory_gb=")  # fmt: skip
        memory = known.memory_gb
    if cap is not None and gpu_type is None:
        bf16 = cap >= 8.0
    else:
        bf16 = known.bf16 if known else supports_bf16(name)
    return Hardware(known.name if known else (name or "GPU"), memory, count, bf16, source, fixed)
