"""The decision of `finetune.auto`, as a pure function: model facts + hardware + request -> `Decision`.

Preference order (first that fits wins): LoRA in bf16 on every GPU (DDP), then LoRA with the weights sharded by
DeepSpeed ZeRO-3, then QLoRA (4-bit weights) on every GPU, then QLoRA sharded by ZeRO-3. Within that: no gradient
checkpointing when a micro batch with enough tokens to keep a GPU busy fits, else checkpointing with the largest
micro batch that fits. Gradient accumulation makes micro batch x accumulation x GPUs = batch_size. Values the user
set are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ...errors import ConfigError
from .gpu_table import KNOWN_GPUS, Hardware
from .memory import Estimate, HostEstimate, Setup, estimate, fit_limit_gb, usable_gb
from .sizing import ModelFacts, human

BUSY_TOKENS = 4096  # tokens per micro step from which a bigger micro batch hardly speeds a GPU up
SEARCH_COUNTS = (1, 2, 4, 8, 16, 32, 64)


class NothingFitsError(ConfigError):
    """No configuration fits the hardware; the message names the smallest one that would."""


@dataclass(frozen=True)
class Request:
    """What the user asked for. The optional fields are values the user fixed (None: auto chooses)."""

    ctx_len: int = 1024
    batch_size: int = 32
    lora_r: int = 8
    allow_quantization: bool = True
    sequences_per_example: int = 1
    method: str | None = None  # "lora", "qlora" or "full"
    micro_batch: int | None = None
    grad_accum: int | None = None
    checkpointing: bool | None = None
    zero: int | None = None
    quant_bits: int = 4
    zero_stages: tuple[int, ...] = (0, 2, 3)  # what the backend can run
    lora_dropout: bool = True
    missing: frozenset[str] = frozenset()  # optional packages the backend's environment lacks (deepspeed, ...)


@dataclass
class Decision:
    """The chosen set-up, its memory estimate and the reasons (also for the alternatives rejected)."""

    facts: ModelFacts
    hardware: Hardware
    request: Request
    setup: Setup
    estimate: Estimate
    usable: float
    reasons: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    host: HostEstimate | None = None  # host RAM, when the caller knows the processes per node and the merge
    host_ram_gb: float | None = None  # the machine's RAM, where known

    @property
    def global_batch(self) -> int:
        return self.setup.micro_batch * self.setup.grad_accum * max(1, self.setup.ngpus)

    def explain(self) -> str:
        lines = [f"model    : {self.facts.describe()}"]
        lines += [f"           note: {n}" for n in self.facts.notes]
        lines += [f"hardware : {self.hardware.describe()}",
                  f"choice   : {self.setup.describe()}",
                  f"estimate : {self.estimate.describe()} per {'GPU' if self.setup.ngpus else 'process'}, "
                  f"of {self.usable:.1f} GB usable ({fit_limit_gb(self.usable):.1f} GB with the safety margin)"]
        if self.host is not None:
            lines.append(f"host RAM : {self.host.describe()}"
                         + (f", of {self.host_ram_gb:.0f} GB" if self.host_ram_gb else " (the nodes' RAM is unknown)"))
        # fmt: skip
        lines += [f"why      : {r}" for r in self.reasons]
        lines += [f"rejected : {r}" for r in self.rejected]
        return "\n".join(lines)


def _divisors(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _gb(f: ModelFacts, s: Setup) -> float:
    return estimate(f, s).total


def _fit(f: ModelFacts, r: Request, n: int, usable: float, method: str, zero: int,
         cb: int) -> tuple[Setup | None, str]:
    """The best set-up for one (method, spread), or None and why not."""
    per_gpu = r.batch_size // max(1, n)
    base = Setup(method, n, 1, per_gpu, True, zero, r.ctx_len, r.lora_r, r.sequences_per_example, cb, r.quant_bits,
                 r.lora_dropout)
    if r.micro_batch is not None:
        sizes = [r.micro_batch]
    elif r.grad_accum is not None:
        sizes = [max(1, per_gpu // r.grad_accum)]
    else:
        sizes = _divisors(per_gpu)
    ckpts = [r.checkpointing] if r.checkpointing is not None else [False, True]
    best: dict[bool, Setup] = {}
    for ckpt in ckpts:
        for mb in sizes:
            s = replace(base, micro_batch=mb, checkpointing=ckpt, grad_accum=r.grad_accum or max(1, per_gpu // mb))
            if _gb(f, s) <= usable:
                best[ckpt] = s
                break
    if not best:
        smallest = replace(base, micro_batch=min(sizes), checkpointing=ckpts[-1])
        return None, f"{smallest.describe()}: needs {estimate(f, smallest).describe()} > {usable:.1f} GB usable " \
            "after the safety margin"
    plain = best.get(False)
    busy = plain and (plain.micro_batch * r.ctx_len >= BUSY_TOKENS or plain.micro_batch == per_gpu)
    if plain and (busy or True not in best or best[True].micro_batch <= plain.micro_batch):
        return plain, "without gradient checkpointing (about 1/3 faster) the micro batch of " \
            f"{plain.micro_batch} fits and has {plain.micro_batch * r.ctx_len} tokens per step"
    chosen = best[True]
    why = f"with gradient checkpointing the micro batch can be {chosen.micro_batch}"
    if plain:
        why += f"; without it only {plain.micro_batch} ({plain.micro_batch * r.ctx_len} tokens per step) fits"
    elif False in ckpts:
        why += "; without it not even a micro batch of 1 fits"
    return chosen, why


def needs(method: str, zero: int) -> list[str]:
    """The optional packages a (method, ZeRO stage) runs with."""
    return (["bitsandbytes"] if method == "qlora" else []) + (["deepspeed"] if zero else [])


def _candidates(f: ModelFacts, r: Request, n: int, device: str) -> list[tuple[str, int]]:
    """(method, ZeRO stage) in order of preference; those needing a package the environment lacks come last."""
    out = _preferred(f, r, n, device)
    return sorted(out, key=lambda c: bool(set(needs(*c)) & r.missing))  # stable: preference kept within each group


def _preferred(f: ModelFacts, r: Request, n: int, device: str) -> list[tuple[str, int]]:
    """(method, ZeRO stage) in order of preference, whatever is installed."""
    if r.method:
        methods = [r.method]
    elif f.kind in ("embed", "rerank"):
        methods = ["full"]
    else:
        methods = ["lora"] + (["qlora"] if r.allow_quantization and device == "cuda" else [])
    out = []
    for m in methods:
        if r.zero is not None:  # the user's DeepSpeed config, whatever it is
            out.append((m, r.zero))
            continue
        stages = [0, 2, 3] if m == "full" else [0, 3]  # ZeRO-2 shards only what LoRA trains: nothing to gain
        out += [(m, z) for z in stages if z in r.zero_stages and (n > 1 or z == 0)]
    return out


def _search(f: ModelFacts, r: Request, n: int, memory_gb: float) -> tuple[Setup | None, str, list[str]]:
    device = "cuda" if n else "cpu"
    limit = fit_limit_gb(usable_gb(memory_gb, device))  # a safety margin below the usable line
    rejected = []
    for method, zero in _candidates(f, r, n, device):
        setup, why = _fit(f, r, n, limit, method, zero, 2 if n else 4)
        if setup is not None:
            return setup, why, rejected
        rejected.append(why)
    return None, "", rejected


def _smallest(f: ModelFacts, r: Request, gpus: list[tuple[float, str]]) -> str | None:
    """The fitting (count x GPU) with the fewest GB in total among `gpus` [(memory, name)], as words."""
    fits = [(n * mem, n, mem, name) for mem, name in gpus for n in SEARCH_COUNTS
            if r.batch_size % n == 0 and _search(f, r, n, mem)[0] is not None]  # fmt: skip
    if not fits:
        return None
    _, n, mem, name = min(fits)
    return f"{n} x {name}: {_search(f, r, n, mem)[0].describe()}"


def smallest_fit(f: ModelFacts, r: Request, hw: Hardware | None = None) -> str:
    """The smallest hardware on which this request fits: more of the same GPUs, or the fewest GB of known ones."""
    known = sorted({(g.memory_gb, g.name) for g in KNOWN_GPUS})
    found = []
    for quantize in ([False, True] if r.allow_quantization and not r.method else [r.method == "qlora"]):
        req = replace(r, method=r.method or ("qlora" if quantize else None), allow_quantization=quantize,
                      micro_batch=None, grad_accum=None, checkpointing=None, zero=None)  # fmt: skip
        for gpus in ([(hw.memory_gb, hw.name)] if hw and hw.count else [], known):
            words = _smallest(f, req, gpus) if gpus else None
            if words and words not in found:
                found.append(words)
    return "; or ".join(found) or "none of the known GPUs, up to 64 of them"


def _not_needed(method: str, zero: int) -> str:
    what = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tuning"}[method]
    if zero:
        return f"{what} with DeepSpeed ZeRO-{zero}: not needed (gathering sharded weights every layer costs time)"
    return f"{what}: not needed (4-bit weights train slower and cost some quality)" if method == "qlora" else ""


def choose_ngpus(hw: Hardware, r: Request) -> tuple[int, str]:
    """How many GPUs to train on: all of them, or the most that divide batch_size evenly."""
    if hw.count == 0:
        return 0, "no GPU: training on CPU in float32, one process"
    if hw.count_fixed:
        if r.batch_size % hw.count:
            raise ConfigError(f"batch_size={r.batch_size} is not a multiple of the launcher's {hw.count} GPU(s); "
                              f"pass a batch_size divisible by {hw.count}")  # fmt: skip
        spread = ": data parallel over all of them" if hw.count > 1 else ""
        return hw.count, f"the launcher gives {hw.count} GPU(s){spread}"
    n = next(d for d in _divisors(r.batch_size) if d <= hw.count)
    why = f"data parallel over {n} GPU(s)"
    if n < hw.count:
        why += f" (of {hw.count}: the largest count that divides batch_size={r.batch_size})"
    return n, why


def decide(f: ModelFacts, hw: Hardware, r: Request) -> Decision:
    """Choose method, GPUs, micro batch, gradient accumulation, checkpointing and ZeRO stage; explain why."""
    if r.batch_size < 1 or r.ctx_len < 1 or r.lora_r < 1:
        raise ConfigError("batch_size, ctx_len and lora_r must be >= 1")
    n, why_n = choose_ngpus(hw, r)
    setup, why_fit, rejected = _search(f, r, n, hw.memory_gb)
    if setup is None:
        where = hw.describe()
        raise NothingFitsError(
            f"{f.name} ({human(f.params_total)} parameters) does not fit on {where} at ctx_len={r.ctx_len}:\n"
            + "\n".join(f"  - {x}" for x in rejected)
            + f"\nThe smallest configuration that would fit: {smallest_fit(f, r, hw)}."
        )
    usable = usable_gb(hw.memory_gb, setup.device)
    later = _candidates(f, r, n, setup.device)
    later = later[later.index((setup.method, setup.zero)) + 1:]
    rejected += [x for x in (_not_needed(m, z) for m, z in later if not set(needs(m, z)) & r.missing) if x]
    preferred = _preferred(f, r, n, setup.device)
    for m, z in preferred[:preferred.index((setup.method, setup.zero))]:
        lacking = sorted(set(needs(m, z)) & r.missing)
        skipped, _ = _fit(f, r, n, usable, m, z, 2 if n else 4) if lacking else (None, "")
        if skipped is not None:
            rejected.append(f"{skipped.describe()}: would fit and is preferred, but needs {', '.join(lacking)}, "
                            f"which the backend's environment lacks (`--with {','.join(lacking)}` adds it)")
    lacking = sorted(set(needs(setup.method, setup.zero)) & r.missing)
    reasons = [why_n, _why_method(f, r, setup, rejected), why_fit]
    if lacking:
        reasons.append(f"needs {', '.join(lacking)}, which the backend's environment lacks: install it before "
                       f"training (`lazytune env install <backend> --with {','.join(lacking)}`)")
    per_gpu = r.batch_size // max(1, n)
    if setup.micro_batch * setup.grad_accum * max(1, n) == r.batch_size:
        reasons.append(f"gradient accumulation {setup.grad_accum}: micro batch {setup.micro_batch} x "
                       f"{setup.grad_accum} x {max(1, n)} process(es) = batch_size {r.batch_size}")  # fmt: skip
    else:
        reasons.append(f"global batch {setup.micro_batch * setup.grad_accum * max(1, n)} (not batch_size="
                       f"{r.batch_size}): set by the micro batch / accumulation you passed")  # fmt: skip
    if setup.micro_batch < per_gpu and not (r.micro_batch or r.grad_accum):
        bigger = replace(setup, micro_batch=next(d for d in reversed(_divisors(per_gpu)) if d > setup.micro_batch))
        rejected.append(f"micro batch {bigger.micro_batch}: needs {_gb(f, bigger):.1f} GB > "
                        f"{fit_limit_gb(usable):.1f} GB usable after the safety margin")
    return Decision(f, hw, r, setup, estimate(f, setup), usable, [x for x in reasons if x], rejected)


def _why_method(f: ModelFacts, r: Request, s: Setup, rejected: list[str]) -> str:
    bf16_gb = f.params_total * 2 / 1024**3
    if r.method:
        return f"{s.method} as you asked (finetuning_type / quantization_bit)"
    if s.method == "full":
        return f"full fine-tuning: the usual way to train a {human(f.params_total)}-parameter {f.kind} model"
    if s.method == "qlora":
        where = f"sharded over {s.ngpus} GPUs with ZeRO-3" if s.zero else "on each GPU"
        lora = "even sharded with ZeRO-3" if s.ngpus > 1 and 3 in r.zero_stages else "on the GPU"
        return f"QLoRA ({s.quant_bits}-bit weights {where}): LoRA on the bf16 weights ({bf16_gb:.1f} GB) " \
            f"does not fit {lora}"
    if s.zero == 3:
        return (f"LoRA with DeepSpeed ZeRO-3: the bf16 weights ({bf16_gb:.1f} GB) do not fit on one GPU, "
                f"sharded over {s.ngpus} they take {bf16_gb / s.ngpus:.1f} GB each")  # fmt: skip
    if s.ngpus == 0:
        return "LoRA in float32 (CPU): QLoRA and DeepSpeed need CUDA"
    return f"LoRA in bf16: the weights ({bf16_gb:.1f} GB) fit on each GPU, so no quantization and no sharding"
