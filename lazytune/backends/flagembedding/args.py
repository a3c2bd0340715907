"""finetune.flagembedding's pieces that need no process: option whitelists, model kind, argv rendering.

Defaults are LazyLLM's documented ones for `finetune.flagembedding` (embed and rerank lists), plus a few FlagEmbedding
keys LazyLLM users reach for (seed, max_steps, bf16, knowledge distillation, instructions for passages).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ...errors import ConfigError, OptionsError, OptionTypeError, UnknownOptionError
from ...model import ModelFolder, architecture_kind, name_kind
from ...options import Option, OptionSpec

KINDS = ("embed", "rerank")
KIND_ALIASES = {"embed": "embed", "embedding": "embed", "rerank": "rerank", "reranker": "rerank"}
MODULES = {
    "embed": "FlagEmbedding.finetune.embedder.encoder_only.base",
    "rerank": "FlagEmbedding.finetune.reranker.encoder_only.base",
}
DECODER_MODULES = (
    "FlagEmbedding.finetune.embedder.decoder_only.base", "FlagEmbedding.finetune.embedder.decoder_only.icl",
    "FlagEmbedding.finetune.reranker.decoder_only.base", "FlagEmbedding.finetune.reranker.decoder_only.layerwise",
)  # fmt: skip
#: Hugging Face model_type values of decoder-only LMs (a bare `Gemma2Model` is still one).
DECODER_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
    "gemma3_text", "internlm", "internlm2", "internlm3", "minicpm", "minicpm3", "yi", "deepseek", "deepseek_v2",
    "deepseek_v3", "phi", "phi3", "opt", "gptj", "gpt2", "gpt_neo", "gpt_neox", "gpt_bigcode", "bloom", "falcon",
    "starcoder2", "olmo", "olmo2", "cohere", "stablelm", "granite", "smollm3", "baichuan", "chatglm", "glm", "glm4",
})  # fmt: skip
#: model_type values whose position ids start after the padding index (RoBERTa's offset): the model can use
#: max_position_embeddings - pad_token_id - 1 positions (514 -> 512, bge-m3's 8194 -> 8192).
PADDING_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                                  "longformer", "mpnet", "ibert", "roberta-prelayernorm", "markuplm"})  # fmt: skip
#: FlagEmbedding's own defaults (its argument dataclasses, 1.4.2) where lazytune's (LazyLLM's) differ: the plan says
#: which of LazyLLM's values a run uses, so a user translating a FlagEmbedding command sees them.
FLAGEMBEDDING_DEFAULTS: dict[str, Any] = {
    "query_max_len": 32, "passage_max_len": 128, "pad_to_multiple_of": None, "learning_rate": 5e-5,
    "num_train_epochs": 3.0, "per_device_train_batch_size": 8, "dataloader_drop_last": False, "warmup_ratio": 0.0,
    "weight_decay": 0.0, "logging_steps": 500, "save_steps": 500, "fp16": False,
    "gradient_checkpointing": False, "negatives_cross_device": False, "query_instruction_for_retrieval": None,
}  # fmt: skip
#: Arguments of FlagEmbedding's encoder_only.m3 trainer only (its examples m3*.sh).
M3_OPTIONS = frozenset({"unified_finetuning", "use_self_distill", "fix_encoder", "self_distill_start_step",
                        "colbert_dim"})  # fmt: skip
DEEPSPEED_CONFIGS = ("stage0", "stage1")  # FlagEmbedding's examples/finetune/ds_stage*.json, in configs/flagembedding
DEEPSPEED_OFF = ("none", "off", "false", "no")
# Options lazytune consumes itself: never rendered as FlagEmbedding arguments.
OWN = frozenset({"deepspeed", "validate_data"})

# TrainingArguments names that changed in transformers: {first major: {our name: the flag to use, None = drop}}.
# transformers 5 deprecated (5.2: removed) warmup_ratio: warmup_steps takes a float < 1 as a ratio since 5.0;
# overwrite_output_dir is gone in 5 (FlagEmbedding refuses a non-empty output_dir either way).
TRANSFORMERS_CHANGES: dict[int, dict[str, str | None]] = {
    5: {"warmup_ratio": "warmup_steps", "overwrite_output_dir": None},
}


def _options(kind: str, lr: float, max_len: int) -> list[Option]:
    """The whitelist of one kind: shared training keys with the kind's defaults, then the kind's own keys."""
    instruction = "query_instruction_for_retrieval" if kind == "embed" else "query_instruction_for_rerank"
    passage_instruction = "passage_instruction_for_retrieval" if kind == "embed" else "passage_instruction_for_rerank"
    default_instruction = "Represent this sentence for searching relevant passages: " if kind == "embed" else None
    opts = [
        Option("train_group_size", int, 8, "passages per query: 1 positive + (n-1) negatives", minimum=1),
        Option("query_max_len", int, max_len, "query tokens kept", minimum=1),
        Option("passage_max_len", int, max_len, "passage tokens kept", minimum=1),
        Option("pad_to_multiple_of", int, 8, "pad sequences to a multiple of this", minimum=1),
        Option(instruction, str, default_instruction, "instruction put before each query ('' for none)"),
        Option("query_instruction_format", str, "{}{}", "format of instruction + query"),
        Option(passage_instruction, str, None, "instruction put before each passage"),
        Option("passage_instruction_format", str, None, "format of instruction + passage"),
        Option("knowledge_distillation", bool, None, "train on the data's pos_scores / neg_scores"),
        Option("learning_rate", float, lr, "peak learning rate", aliases=("lr",), minimum=0),
        Option("num_train_epochs", float, 1.0, "epochs", aliases=("num_epochs",), minimum=0),
        Option("max_steps", int, None, "stop after this many optimizer steps (overrides epochs)", minimum=1),
        Option("per_device_train_batch_size", int, 2, "queries per process and step", minimum=1),
        Option("gradient_accumulation_steps", int, 1, "batches per optimizer step", minimum=1),
        Option("dataloader_drop_last", bool, True, "drop the last incomplete batch"),
        Option("warmup_ratio", float, 0.1, "fraction of steps for linear warmup", minimum=0),
        Option("weight_decay", float, 0.01, "AdamW weight decay", minimum=0),
        Option("deepspeed", str, "auto", "auto (stage0 when deepspeed is installed and a GPU is used), stage0, "
               "stage1, a config file, or none"),
        Option("logging_steps", int, 1, "log every n steps", minimum=1),
        Option("save_steps", int, 1000, "checkpoint every n steps", minimum=1),
        Option("save_strategy", str, None, "when to checkpoint", choices=("no", "steps", "epoch")),
        Option("save_total_limit", int, None, "keep at most n checkpoints", minimum=1),
        Option("overwrite_output_dir", bool, True, "LazyLLM compatibility (transformers < 5 only)"),
        Option("fp16", bool, True, "fp16 mixed precision (GPU only; dropped on CPU unless asked for)"),
        Option("bf16", bool, None, "bf16 mixed precision"),
        Option("gradient_checkpointing", bool, True, "recompute activations to save memory"),
        Option("seed", int, None, "random seed (FlagEmbedding's default: 42)"),
        Option("trust_remote_code", bool, None, "load the model's own code (default: True when config.json has "
               "auto_map; False refuses such a model)"),
        Option("report_to", str, "none", "experiment tracker (none, tensorboard, wandb, ...)"),
        Option("validate_data", bool, True, "check every record of the data before starting (False: the first 20)",
               aliases=("validate",)),
    ]
    if kind == "embed":
        opts += [
            Option("temperature", float, 0.02, "temperature of the similarity scores", minimum=0),
            Option("sentence_pooling_method", str, "cls", "pooling", choices=("cls", "mean", "last_token")),
            Option("normalize_embeddings", bool, True, "L2-normalize embeddings"),
            Option("kd_loss_type", str, "kl_div", "knowledge distillation loss", choices=("kl_div", "m3_kd_loss")),
            Option("negatives_cross_device", bool, True, "share negatives across processes (multi-process only "
                   "unless asked for)"),
            Option("same_dataset_within_batch", bool, None, "every batch from one data file (FlagEmbedding)"),
            Option("small_threshold", int, None, "with same_dataset_within_batch: merge files smaller than this",
                   minimum=0),
            Option("drop_threshold", int, None, "with same_dataset_within_batch: drop merged files smaller than "
                   "this", minimum=0),
        ]
    return opts


OPTION_SPECS = {
    "embed": OptionSpec("flagembedding (embed)", _options("embed", 1e-5, 512)),
    "rerank": OptionSpec("flagembedding (rerank)", _options("rerank", 6e-5, 256)),
}


def _both_kinds() -> OptionSpec:
    """Every option of either kind, for listing and command-line typing (validation uses the model's kind)."""
    embed, rerank = OPTION_SPECS["embed"].options, OPTION_SPECS["rerank"].options
    opts = [Option("model_kind", str, None, "embed or rerank (default: read from the model)", choices=KINDS)]
    for name, opt in {**embed, **rerank}.items():
        if name in embed and name in rerank and embed[name].default != rerank[name].default:
            opt = replace(opt, default=None, help=f"{opt.help} (default: embed {embed[name].default!r}, "
                                                  f"rerank {rerank[name].default!r})")  # fmt: skip
        elif name not in rerank or name not in embed:
            opt = replace(opt, help=f"{opt.help} ({'embed' if name in embed else 'rerank'} only)")
        opts.append(opt)
    return OptionSpec("flagembedding", opts)


BOTH_KINDS = _both_kinds()


def validate_kind_options(kind: str, kw: dict[str, Any], model: Path) -> dict[str, Any]:
    """Validated options of `kind` with defaults. Keys of the other kind (or close to one) get their own message."""
    spec, other = OPTION_SPECS[kind], OPTION_SPECS[other_kind(kind)]
    a_other = "an embed" if kind == "rerank" else "a rerank"
    problems = []
    m3 = sorted(k for k in kw if k in M3_OPTIONS)
    if m3:
        problems.append(f"{', '.join(m3)}: options of bge-m3's unified fine-tuning (FlagEmbedding.finetune.embedder."
                        "encoder_only.m3: dense + sparse + multi-vector, self-distillation), which lazytune does not "
                        "run; lazytune trains bge-m3's dense embeddings with encoder_only.base (leave these out), "
                        "or run the m3 trainer with FlagEmbedding directly")  # fmt: skip
    for key in (k for k in kw if k not in spec and k not in M3_OPTIONS):
        close = other.suggestions(key) if not spec.suggestions(key) else []
        if key in other:
            problems.append(f"{key!r} is an option of {other_kind(kind)} models, but {model.name} is fine-tuned as "
                            f"{'a rerank' if kind == 'rerank' else 'an embed'} model (pass "
                            f"model_kind={other_kind(kind)!r} if it is {a_other} model)")  # fmt: skip
        elif close:
            problems.append(f"unknown option {key!r} for {spec.backend}; did you mean {close[0]!r} (an option of "
                            f"{other_kind(kind)} models)?")  # fmt: skip
        else:
            problems.append(spec.unknown_message(key))
    if problems:
        try:
            spec.validate({k: v for k, v in kw.items() if k in spec})
        except OptionsError as exc:
            problems += exc.problems
        raise UnknownOptionError(spec.backend, problems)
    return spec.resolve(kw)


def other_kind(kind: str) -> str:
    return "rerank" if kind == "embed" else "embed"


def _architecture_kind(archs: list[str], model_type: str | None) -> str | None:
    if model_type in DECODER_TYPES:  # Gemma2Model, MistralModel, Qwen2ForSequenceClassification: decoder-only
        return "decoder"
    if any(a.removesuffix("Model").lower() in DECODER_TYPES for a in archs):  # no model_type: Gemma2Model, ...
        return "decoder"
    return architecture_kind(archs)


def detect_kind(model: ModelFolder | Path, model_kind: Any = None) -> str:
    """'embed' or 'rerank': `model_kind` when given, else from config.json's architectures and the folder name
    (both must agree: an encoder's kind decides which FlagEmbedding trainer runs). Decoder-only models are refused."""
    model = ModelFolder.of(model)
    if model.config_error:
        raise ConfigError(f"cannot read {model.config_path}: {model.config_error}")
    archs = model.architectures
    model_type = model.model_type
    by_arch = _architecture_kind(archs, model_type)
    if by_arch == "decoder":
        # Trained by the encoder-only trainer (cls pooling, no LoRA) such a model gives every text the same
        # embedding and its loss never moves: FlagEmbedding has separate decoder-only trainers for these.
        raise ConfigError(
            f"{model} is a decoder-only model ({', '.join(archs) or 'no architectures'}, model_type "
            f"{model_type!r}): finetune.flagembedding runs FlagEmbedding's encoder-only trainers (BERT, XLM-RoBERTa, "
            "... embedders and rerankers), which would train it with cls pooling and without LoRA. Decoder-only "
            "embedders and rerankers (bge-multilingual-gemma2, bge-en-icl, bge-reranker-v2-gemma, ...) need "
            "FlagEmbedding's decoder-only trainers (" + ", ".join(DECODER_MODULES) + "), which lazytune does not "
            "run yet: run them with FlagEmbedding directly"
        )
    if model_kind is not None:
        kind = KIND_ALIASES.get(str(model_kind).strip().lower()) if isinstance(model_kind, str) else None
        if kind is None:
            problem = f"'model_kind': must be one of 'embed', 'rerank', got {model_kind!r}"
            raise OptionTypeError("flagembedding", [problem])
        return kind
    by_name = name_kind(model.name)
    ask = "pass model_kind='embed' or model_kind='rerank'"
    if by_arch and by_name and by_arch != by_name:
        raise ConfigError(
            f"cannot tell whether {model} is an embedding or a reranker model: its name says {by_name} but its "
            f"architecture ({', '.join(archs)}) says {by_arch}; {ask}"
        )
    kind = by_arch or by_name
    if kind is None:
        what = ", ".join(archs) or "no architectures in config.json"
        raise ConfigError(
            f"cannot tell whether {model} is an embedding or a reranker model ({what}, and the folder name "
            f"does not say); {ask}"
        )
    return kind


def check_lengths(model: ModelFolder | Path, kind: str, options: dict[str, Any]) -> None:
    """Sequence lengths the model's position embeddings can hold (else training dies mid-run on the first long text).

    An embedder encodes queries and passages separately; a reranker encodes query + passage as one sequence.
    """
    model = ModelFolder.of(model)
    config = model.config
    positions = model.max_positions
    if positions is None:
        return
    where = "max_position_embeddings"
    pad = config.get("pad_token_id")
    if config.get("model_type") in PADDING_OFFSET_TYPES and isinstance(pad, int):
        positions -= pad + 1  # position ids start at pad_token_id + 1
        where = f"max_position_embeddings {positions + pad + 1} minus the padding offset {pad + 1}"
    q, p = options["query_max_len"], options["passage_max_len"]
    longest = q + p if kind == "rerank" else max(q, p)
    if longest > positions:
        what = f"query_max_len + passage_max_len = {longest}" if kind == "rerank" else f"a max_len of {longest}"
        raise OptionsError(f"flagembedding ({kind})", [
            f"{what} exceeds the {positions} positions of {model.name} ({where}): lower "
            "query_max_len / passage_max_len"
        ])  # fmt: skip


# --- argv -----------------------------------------------------------------------------------------------------------


def flag_names(transformers_version: str) -> dict[str, str | None]:
    """{option: flag to use, None to drop} for the options whose TrainingArguments name depends on the version."""
    try:
        major = int(transformers_version.split(".")[0])
    except (ValueError, AttributeError):
        major = 0
    names: dict[str, str | None] = {}
    for since, changes in sorted(TRANSFORMERS_CHANGES.items()):
        if major >= since:
            names.update(changes)
    return names


def render(value: Any) -> str:
    """A value as HfArgumentParser reads it: booleans as True/False (never bare flags)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def option_args(options: dict[str, Any], kind: str, transformers_version: str) -> list[str]:
    """`--name value` pairs for every set option FlagEmbedding takes, in whitelist order."""
    names = flag_names(transformers_version)
    args: list[str] = []
    for opt in OPTION_SPECS[kind]:
        value = options.get(opt.name)
        if value is None or opt.name in OWN:
            continue
        flag = names.get(opt.name, opt.name)
        if flag is not None:
            args += [f"--{flag}", render(value)]
    return args
