"""Model facts for `finetune.auto`, read from the model folder: parameter count, shape, dtype and kind.

The count is computed from config.json with the architecture's real layer shapes (GQA key/value heads, gated MLPs,
MoE experts total vs active, tied embeddings, fused projections). Only when config.json is missing is the size parsed
from the folder name ("Qwen2.5-0.5B", "chatglm3-6b", "qwen-1_8b", "Mixtral-8x7B"), with a warning.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...model import ENCODERS, ModelFolder, detect_kind

UNGATED = {"phi", "gpt2", "gpt_neox", "gptj", "falcon", "starcoder2", "opt", "bloom"}  # MLP: fc1 -> act -> fc2
TIED_BY_DEFAULT = ("gemma",)  # model types whose config class defaults to tie_word_embeddings=True
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float": 4, "half": 2}


class SizeWarning(UserWarning):
    """A model fact was guessed (from the name, or an architecture counted approximately)."""


@dataclass(frozen=True)
class ModelFacts:
    """What the memory model needs to know about a model. Counts are numbers of parameters."""

    name: str
    model_type: str
    kind: str  # "causal", "vlm", "embed" or "rerank"
    params_total: int
    params_active: int  # per token (MoE: top-k experts only); = params_total for dense models
    params_embedding: int  # input embedding + untied output head
    layers: int
    hidden: int
    intermediate: int  # MLP width one token goes through (MoE: one expert; summed over top-k in `mlp_widths`)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype: str
    experts: int = 0
    experts_per_token: int = 0
    vision_params: int = 0
    max_positions: int | None = None  # longest input the position embeddings allow (None: unknown)
    source: str = "config.json"  # or "name" (guessed) for a folder without config.json
    notes: tuple[str, ...] = ()
    lora_linears: tuple[tuple[int, int, int], ...] = field(default=())  # (in, out, count per layer) of each Linear

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 2)

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def lora_input_width(self) -> int:
        """Summed input width of the Linears one token passes through per layer (MoE: only its top-k experts)."""
        share = self.experts_per_token / self.experts if self.is_moe else 1
        return int(sum(i * n * (share if self.is_moe and n >= self.experts else 1) for i, _, n in self.lora_linears))

    def lora_params(self, r: int) -> int:
        """Trainable parameters of a rank-`r` LoRA on every Linear of every layer (LLaMA-Factory's `all`)."""
        return self.layers * sum(r * (i + o) * n for i, o, n in self.lora_linears)

    def describe(self) -> str:
        size = f"{human(self.params_total)} parameters"
        if self.is_moe:
            size += f" ({human(self.params_active)} active: {self.experts_per_token} of {self.experts} experts)"
        shape = f"{self.layers} layers, hidden {self.hidden}, vocab {self.vocab}"
        if self.heads:
            shape += f", {self.heads} heads / {self.kv_heads} kv heads"
        return f"{self.name}: {self.model_type} ({self.kind}), {size}, {shape}, {self.dtype} (from {self.source})"


def human(count: float) -> str:
    """A parameter count as people write it: 6.74B, 494M, 140K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(int(count))


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _encoder_count(cfg: dict[str, Any], kind: str) -> tuple[int, int]:
    """(total, embedding) parameters of a BERT-style encoder: the base model plus pooler or classification head."""
    h, L, i, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    pos, types = cfg.get("max_position_embeddings", 512), cfg.get("type_vocab_size", 2)
    embedding = V * h + pos * h + types * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    head = h * h + h  # pooler (embedders) or the dense layer of the classification head (rerankers)
    if kind == "rerank":
        labels = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 1
        head += h * labels + labels
    return embedding + L * layer + head, embedding


def _vision_count(vcfg: dict[str, Any], text_hidden: int) -> int:
    """Approximate parameters of a ViT vision tower and its projector from its config: attention + MLP per block."""
    d = _get(vcfg, "embed_dim", "hidden_size", "width", default=0)
    depth = _get(vcfg, "depth", "num_hidden_layers", "layers", default=0)
    mlp = _get(vcfg, "intermediate_size", default=None) or int(d * vcfg.get("mlp_ratio", 4))
    patch = vcfg.get("patch_size", 14)
    out = _get(vcfg, "out_hidden_size", default=None) or (vcfg.get("hidden_size") if "embed_dim" in vcfg else None)
    merged = d * vcfg.get("spatial_merge_size", 1) ** 2  # patches merged before the projector (Qwen2-VL)
    per_block = 4 * d * d + 2 * d * mlp + 6 * d + mlp
    projector = merged * merged + merged * (out or text_hidden)
    return depth * per_block + 3 * patch * patch * d * vcfg.get("temporal_patch_size", 1) + projector


def _decoder_count(cfg: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Parameter counts of a decoder-only transformer from its config (llama-like and the usual variants)."""
    h = _get(cfg, "hidden_size", "n_embd", "d_model")
    L = _get(cfg, "num_hidden_layers", "num_layers", "n_layer")
    nh = _get(cfg, "num_attention_heads", "n_head")
    V = _get(cfg, "padded_vocab_size", "vocab_size")
    if None in (h, L, nh, V):
        raise ValueError("config.json lacks hidden_size / num_hidden_layers / num_attention_heads / vocab_size")
    if model_type == "chatglm":
        kv = cfg.get("multi_query_group_num", nh) if cfg.get("multi_query_attention") else nh
    else:
        kv = _get(cfg, "num_key_value_heads", default=nh)
    hd = _get(cfg, "head_dim", "kv_channels", default=None) or h // nh
    i = _get(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=None) or 4 * h
    q, k = nh * hd, kv * hd
    linears = [(h, q, 1), (h, k, 2), (q, h, 1)]  # q, k + v, o (fused qkv / W_pack have the same count)
    attn = h * q + 2 * h * k + q * h
    qkv_bias = cfg.get("attention_bias") or cfg.get("add_qkv_bias") or model_type.startswith("qwen2") or \
        (model_type == "internlm2" and cfg.get("bias"))
    attn += (q + 2 * k) if qkv_bias else 0
    attn += 2 * hd if model_type.startswith(("qwen3", "gemma3", "olmo2")) else 0  # q_norm / k_norm
    gated = model_type not in UNGATED
    experts = int(_get(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0)
    top_k = int(_get(cfg, "num_experts_per_tok", "moe_topk", default=0) or 0) if experts > 1 else 0
    ie = _get(cfg, "moe_intermediate_size", default=None) or i if experts > 1 else i
    mlp_one = (3 * h * ie) if gated else (2 * h * ie + ie + h)
    shared_i = _get(cfg, "shared_expert_intermediate_size", default=0) or 0
    shared = 3 * h * shared_i + (h if shared_i else 0)  # qwen2_moe: shared expert + its sigmoid gate
    if experts > 1:
        mlp_total = experts * mlp_one + h * experts + shared
        mlp_active = top_k * mlp_one + h * experts + shared
        linears += [(h, ie, 2 * experts), (ie, h, experts)]
        linears += [(h, shared_i, 2), (shared_i, h, 1)] if shared_i else []
    else:
        mlp_total = mlp_active = mlp_one
        linears += [(h, i, 2 if gated else 1), (i, h, 1)]
    if model_type == "phi":  # phi-1/2: biased dense and LayerNorm with bias
        attn += q + 2 * k + h
    norms = 4 * h if model_type in UNGATED else 2 * h
    tied = cfg.get("tie_word_embeddings", model_type.startswith(TIED_BY_DEFAULT))
    embedding = V * h + (0 if tied else V * h)
    final = embedding + (2 * h if model_type in UNGATED else h) + (V if model_type == "phi" else 0)
    return {
        "total": L * (attn + mlp_total + norms) + final,
        "active": L * (attn + mlp_active + norms) + final,
        "embedding": embedding, "layers": L, "hidden": h, "intermediate": ie, "heads": nh, "kv_heads": kv,
        "head_dim": hd, "vocab": V, "experts": experts if experts > 1 else 0, "top_k": top_k,
        "linears": tuple(x for x in linears if x[1] > 0),
    }  # fmt: skip


def facts_from_config(cfg: dict[str, Any], name: str = "model", folder: Path | None = None) -> ModelFacts:
    """ModelFacts computed from a config.json dict."""
    kind = detect_kind(cfg, folder)
    model_type = str(cfg.get("model_type", "")).lower()
    dtype = str(_get(cfg, "torch_dtype", "dtype", default="") or "").replace("torch.", "")
    notes: list[str] = []
    if dtype not in DTYPE_BYTES:
        notes.append(f"config.json gives no dtype: assuming bfloat16 weights (was {dtype or 'unset'!r})")
        dtype = "bfloat16"
    if kind in ("embed", "rerank") and model_type in ENCODERS:
        total, embedding = _encoder_count(cfg, kind)
        h, L = cfg["hidden_size"], cfg["num_hidden_layers"]
        i, nh = cfg["intermediate_size"], cfg["num_attention_heads"]
        offset = 2 if "roberta" in model_type else 0  # RoBERTa's positions start after the padding index
        max_pos = cfg.get("max_position_embeddings", 512) - offset
        return ModelFacts(name, model_type, kind, total, total, embedding, L, h, i, nh, nh, h // nh,
                          cfg["vocab_size"], dtype, max_positions=max_pos, notes=tuple(notes),
                          lora_linears=((h, h, 4), (h, i, 1), (i, h, 1)))  # fmt: skip
    text = cfg.get("text_config") or cfg.get("llm_config") or cfg
    text_type = str(text.get("model_type", model_type)).lower()
    c = _decoder_count(text, text_type)
    vision = 0
    if cfg.get("vision_config"):
        vision = _vision_count(cfg["vision_config"], c["hidden"])
        notes.append(f"vision tower counted approximately ({vision / 1e6:.0f}M parameters)")
    return ModelFacts(
        name, model_type, kind, c["total"] + vision, c["active"] + vision, c["embedding"], c["layers"], c["hidden"],
        c["intermediate"], c["heads"], c["kv_heads"], c["head_dim"], c["vocab"], dtype, c["experts"], c["top_k"],
        vision, _get(text, "max_position_embeddings", "seq_length", default=None), notes=tuple(notes),
        lora_linears=c["linears"],
    )  # fmt: skip


_SIZE = re.compile(r"(?<![0-9a-z.])(\d+(?:[._]\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
_MOE = re.compile(r"(?<![0-9a-z.])(\d+)x(\d+(?:[._]\d+)?)b(?![a-z])", re.IGNORECASE)
_ACTIVE = re.compile(r"[-_]a(\d+(?:[._]\d+)?)b(?![a-z])", re.IGNORECASE)


def parse_name_size(name: str) -> tuple[float, float] | None:
    """(total, active) parameter count from a model name, or None: "Qwen2.5-0.5B" -> 0.5e9, "qwen-1_8b" -> 1.8e9,
    "Mixtral-8x7B" -> 56e9 (an upper bound: experts share attention), "Qwen3-30B-A3B" -> (30e9, 3e9)."""
    if m := _MOE.search(name):
        n, each = int(m.group(1)), float(m.group(2).replace("_", "."))
        return n * each * 1e9, 2 * each * 1e9
    sizes = [float(v.replace("_", ".")) * (1e9 if unit.lower() == "b" else 1e6) for v, unit in _SIZE.findall(name)]
    if not sizes:
        return None
    total = max(sizes)
    active = _ACTIVE.search(name)
    return total, float(active.group(1).replace("_", ".")) * 1e9 if active else total


def _guess_from_name(folder: Path) -> ModelFacts:
    """Facts for a folder without config.json: size from the name, shape from a Llama-like rule of thumb."""
    parsed = parse_name_size(folder.name)
    if parsed is None:
        raise ValueError(f"{folder} has no config.json and its name carries no size (like '7B' or '0.5b')")
    total, active = parsed
    note = f"no config.json in {folder}: size {total / 1e9:g}B guessed from the folder name; shapes are estimates"
    warnings.warn(note, SizeWarning, stacklevel=3)
    # Llama-family proportions: params ~ 12.5 * L * h^2, L ~ h / 128 for small to large models.
    h = int(round((total / 12.5 * 128) ** (1 / 3) / 128)) * 128 or 128
    L = max(1, int(total / (12.5 * h * h)))
    heads = max(1, h // 128)
    i = int(8 * h / 3 / 256 + 1) * 256
    linears = ((h, h, 4), (h, i, 2), (i, h, 1))
    return ModelFacts(folder.name, "unknown", "causal", int(total), int(active), 32000 * h * 2, L, h, i, heads, heads,
                      128, 32000, "bfloat16", source="name", notes=(note,), lora_linears=linears)  # fmt: skip


def model_facts(folder: str | Path | ModelFolder) -> ModelFacts:
    """Facts about the model in `folder` (config.json; the folder name only as a warned fallback)."""
    model = ModelFolder.of(folder)
    if not model.config_path.is_file():
        return _guess_from_name(model.path)
    try:
        if model.config_error:
            raise ValueError(model.config_error)
        return facts_from_config(model.config, model.name, model.path)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot size the model from {model.config_path}: {exc!r}; pass an architecture "
                          "lazytune knows (llama, qwen2/3, mistral, mixtral, gemma, phi, internlm2, chatglm, baichuan, "
                          "bert, xlm-roberta) or give the GPU settings yourself") from None
