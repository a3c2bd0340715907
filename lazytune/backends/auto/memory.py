"""The memory model behind `finetune.auto`: peak memory per GPU of one training set-up, part by part.

All numbers are GiB per GPU (per process on CPU), written "GB" in messages (nvidia-smi's MiB / 1024). The model is
deliberately simple and readable; every constant says where it comes from. Parts: base weights (bf16, fp32 on CPU,
or 4-bit for QLoRA), trainable state (weights, gradients and AdamW moments of what is trained), activations (a
function of ctx_len, micro batch and gradient checkpointing), the logits of the loss, and a fixed overhead. DDP
replicates everything; ZeRO shards it.

Checked (scripts/measure_memory.py): on CPU, fp32, a Qwen2-shaped 35M-parameter model, micro batch 4 x 512 tokens,
LoRA r=8 on all linears, the real peak (RSS, glibc trimming on) was 0.88x the estimate without and 0.83x with
gradient checkpointing (overhead excluded). On GPU it has not been measured yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .sizing import ModelFacts

GIB = 1024**3
QUANT_BYTES = {4: 0.52, 8: 1.03}  # bitsandbytes NF4 (+ double-quantized absmax) / int8 (+ scales), per weight
ADAMW_BYTES = 16  # per trained parameter: fp32 weight 4 + fp32 gradient 4 + two fp32 AdamW moments 8
ZERO_BYTES = {1: (4, 12), 2: (2, 14), 3: (0, 16)}  # ZeRO paper, mixed precision: (replicated, sharded) per param
LOGIT_BYTES = 12  # per token per vocab entry: bf16 logits 2 + fp32 upcast for the loss 4 + log-softmax 4 + slack 2
GATHERED_LAYERS = 2  # ZeRO-3 holds the layer it computes plus the prefetched next one
OVERHEAD_GB = {"cuda": 1.0, "cpu": 1.0}  # CUDA context + cuBLAS/NCCL workspaces; on CPU torch's own footprint
USABLE_FRACTION = {"cuda": 0.90, "cpu": 0.80}  # allocator fragmentation on GPU; the OS and other processes on CPU
# A choice must also leave this much of the usable memory free (the model is an estimate: a set-up at 21.4 of 21.6
# usable GB is a coin toss): 5 % of it, at least 0.5 GB.
SAFETY_FRACTION, SAFETY_MIN_GB = 0.05, 0.5
# Host RAM: what a training process costs besides the model (python, torch, CUDA libraries, data), and the largest
# safetensors shard a loader holds while it moves weights to the GPU (transformers saves 5 GB shards by default).
HOST_PROCESS_GB = 2.0
SHARD_GB = 5.0


@dataclass(frozen=True)
class Setup:
    """One training configuration to estimate. `ngpus=0` is CPU (one process)."""

    method: str  # "lora", "qlora" or "full"
    ngpus: int
    micro_batch: int
    grad_accum: int
    checkpointing: bool
    zero: int  # 0: no DeepSpeed (single process or DDP); 2 or 3: DeepSpeed ZeRO stage
    ctx_len: int
    lora_r: int = 8
    sequences_per_example: int = 1  # embedders: 1 query + train_group_size passages
    compute_bytes: int = 2  # bf16/fp16 on GPU, fp32 on CPU
    quant_bits: int = 4  # QLoRA only
    lora_dropout: bool = True  # lazytune's templates use 0.05: each LoRA input gets its own dropped copy

    @property
    def device(self) -> str:
        return "cuda" if self.ngpus > 0 else "cpu"

    def describe(self) -> str:
        method = {"lora": f"LoRA r={self.lora_r}", "qlora": f"QLoRA (4-bit) r={self.lora_r}",
                  "full": "full fine-tuning"}[self.method]  # fmt: skip
        method = method.replace("4-bit", f"{self.quant_bits}-bit")
        where = f"{self.ngpus} GPU(s)" if self.ngpus else "CPU"
        spread = f"DeepSpeed ZeRO-{self.zero}" if self.zero else ("DDP" if self.ngpus > 1 else "single process")
        ckpt = "with" if self.checkpointing else "without"
        return (f"{method} on {where}, {spread}, micro batch {self.micro_batch} x gradient accumulation "
                f"{self.grad_accum}, {ckpt} gradient checkpointing, ctx_len {self.ctx_len}")  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """Peak memory per GPU, in GiB, by part."""

    weights: float
    trainable: float
    activations: float
    logits: float
    overhead: float
    loading: float = 0.0  # peak while the model loads, when that is higher than training's (QLoRA + ZeRO-3)

    @property
    def training(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits + self.overhead

    @property
    def total(self) -> float:
        return max(self.training, self.loading)

    def describe(self) -> str:
        text = (f"{self.training:.1f} GB = weights {self.weights:.1f} + trainable state {self.trainable:.2f} + "
                f"activations {self.activations:.1f} + logits {self.logits:.1f} + overhead {self.overhead:.1f}")
        if self.loading > self.training:
            text = (f"{self.loading:.1f} GB while loading (transformers puts the whole 4-bit model on every GPU "
                    f"before ZeRO-3 shards it); training: {text}")
        return text


@dataclass(frozen=True)
class HostEstimate:
    """Host RAM per node, in GiB: while the processes load and train, and for the LoRA merge on the CPU."""

    train: float
    merge: float  # 0: no merge step

    @property
    def total(self) -> float:
        return max(self.train, self.merge)

    def describe(self) -> str:
        merge = f", LoRA merge on the CPU {self.merge:.1f} GB (bf16: 2 bytes per parameter)" if self.merge else ""
        return f"{self.total:.1f} GB host RAM per node: training {self.train:.1f} GB{merge}"


def host_estimate(f: ModelFacts, s: Setup, processes_per_node: int, merge: bool,
                  full_copy_per_process: bool = False) -> HostEstimate:
    """Host RAM of a run. On GPUs, LLaMA-Factory and alpacalora load each process's weights straight onto its GPU
    (device_map), a shard at a time; `full_copy_per_process`: each process first builds the whole model in host RAM
    (the HF Trainer under DeepSpeed). On CPU the training estimate is host memory already. The merge (LF export,
    merge_lora.py) holds the whole model in bf16 on the CPU."""
    bf16_gb = f.params_total * 2 / GIB
    procs = max(1, processes_per_node)
    if s.device == "cpu":
        train = estimate(f, s).total
    elif full_copy_per_process:
        train = procs * (HOST_PROCESS_GB + bf16_gb)
    else:
        train = procs * (HOST_PROCESS_GB + min(SHARD_GB, bf16_gb))
    merged = HOST_PROCESS_GB + bf16_gb * 1.1 if merge and s.method != "full" else 0.0  # + one shard being written
    return HostEstimate(train=train, merge=merged)


def usable_gb(memory_gb: float, device: str) -> float:
    """The part of a GPU's (or the machine's) memory a training process can count on."""
    return memory_gb * USABLE_FRACTION[device]


def fit_limit_gb(usable: float) -> float:
    """The most a chosen set-up may be estimated at: the usable memory less the safety margin."""
    return usable - max(SAFETY_MIN_GB, SAFETY_FRACTION * usable)


def _layer_params(f: ModelFacts) -> float:
    return (f.params_total - f.params_embedding - f.vision_params) / max(1, f.layers)


def weight_bytes(f: ModelFacts, s: Setup) -> float:
    """Base weights held by one GPU."""
    n = max(1, s.ngpus)
    if s.method == "full":
        if s.zero:
            replicated, sharded = ZERO_BYTES[s.zero]
            return f.params_total * (replicated + sharded / n)
        return f.params_total * ADAMW_BYTES * (1.25 if n > 1 else 1)  # DDP keeps a copy of the gradients in buckets
    if s.method == "qlora":  # embeddings, the output head and the vision tower stay in bf16
        kept = f.params_embedding + f.vision_params
        full = (f.params_total - kept) * QUANT_BYTES[s.quant_bits] + kept * 2
        return full / n + GATHERED_LAYERS * _layer_params(f) * QUANT_BYTES[s.quant_bits] if s.zero == 3 else full
    if s.zero == 3:
        return f.params_total * s.compute_bytes / n + GATHERED_LAYERS * _layer_params(f) * s.compute_bytes
    return f.params_total * s.compute_bytes


def trainable_bytes(f: ModelFacts, s: Setup) -> float:
    """Adapter weights, gradients and optimizer moments (full fine-tuning counts them in `weight_bytes`)."""
    if s.method == "full":
        return 0.0
    lora = f.lora_params(s.lora_r)
    return lora * (4 + 12 / max(1, s.ngpus)) if s.zero else lora * ADAMW_BYTES


def activation_bytes(f: ModelFacts, s: Setup) -> float:
    """Saved activations for the backward pass (plus one recomputed layer with gradient checkpointing).

    Decoder layer, per token, in bf16 bytes (SDPA/flash attention, no dropout): two RMSNorms with their fp32
    intermediates ~20h, attention input/q/k/v/RoPE/output ~12h + 6 kv, gated MLP gate/up/act/product 8 i.
    Encoder (BERT) layer: 34h + 5 a s (Korthikanti et al. 2022, attention scores and dropout kept).
    LoRA dropout adds, per adapted Linear, a copy of its input and the dropout mask (1 byte per input element).
    """
    scale = s.compute_bytes / 2
    tokens = s.micro_batch * s.ctx_len * s.sequences_per_example
    h = f.hidden
    if f.kind in ("embed", "rerank"):
        per_layer = (34 * h + 5 * f.heads * s.ctx_len) * scale
    else:
        mlp = f.intermediate * max(1, f.experts_per_token)
        per_layer = (32 * h + 6 * f.kv_heads * f.head_dim + 8 * mlp) * scale
        if s.method != "full" and s.lora_dropout:
            per_layer += (2 * scale + 1) * f.lora_input_width  # the dropped copy + a 1-byte mask
    if s.checkpointing:
        return tokens * (f.layers * 2 * h * scale + per_layer)
    return tokens * f.layers * per_layer


def logit_bytes(f: ModelFacts, s: Setup) -> float:
    """The output head's logits and the loss over them (none for embedders: their scores are tiny)."""
    if f.kind in ("embed", "rerank"):
        return 0.0
    return s.micro_batch * s.ctx_len * f.vocab * LOGIT_BYTES


def estimate(f: ModelFacts, s: Setup) -> Estimate:
    """Peak memory per GPU of training `f` with set-up `s`."""
    transient = 0.0
    if s.method == "qlora":  # bitsandbytes dequantizes one Linear at a time into a bf16 temporary
        transient = max(i * o for i, o, _ in f.lora_linears) * 2
    loading = 0.0
    if s.method == "qlora" and s.zero == 3 and s.ngpus > 1:  # the whole 4-bit model on each GPU, then sharded
        loading = (weight_bytes(f, replace(s, zero=0)) + transient) / GIB + OVERHEAD_GB[s.device]
    return Estimate(
        weights=weight_bytes(f, s) / GIB,
        trainable=trainable_bytes(f, s) / GIB,
        activations=(activation_bytes(f, s) + transient) / GIB,
        logits=logit_bytes(f, s) / GIB,
        overhead=OVERHEAD_GB[s.device],
        loading=loading,
    )
