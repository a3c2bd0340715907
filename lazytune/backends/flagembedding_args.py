"""finetune.flagembedding's pieces that need no process: option whitelists, model kind, argv rendering.

Defaults are LazyLLM's documented ones for `finetune.flagembedding` (embed and rerank lists), plus a few FlagEmbedding
keys LazyLLM users reach for (seed, max_steps, bf16, knowledge distillation, instructions for passages).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OptionsError, OptionTypeError, UnknownOptionError
from ..options import Option, OptionSpec

KINDS = ("embed", "rerank")
KIND_ALIASES = {"embed": "embed", "embedding": "embed", "rerank": "rerank", "reranker": "rerank"}
MODULES = {
    "embed": "FlagEmbedding.finetune.embedder.encoder_only.base",
    "rerank": "FlagEmbedding.finetune.reranker.encoder_only.base",
}
DEEPSPEED_CONFIGS = ("stage0", "stage1")  # ours, in configs/flagembedding/ds_<name>.json
DEEPSPEED_OFF = ("none", "off", "false", "no")
# Options lazytune consumes itself: never rendered as FlagEmbedding arguments.
OWN = frozenset({"deepspeed", "validate"})

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
        Option("validate", bool, True, "check every record of the data before starting (False: the first 20)"),
    ]
    if kind == "embed":
        opts += [
            Option("temperature", float, 0.02, "temperature of the similarity scores", minimum=0),
            Option("sentence_pooling_method", str, "cls", "pooling", choices=("cls", "mean", "last_token")),
            Option("normalize_embeddings", bool, True, "L2-normalize embeddings"),
            Option("kd_loss_type", str, "kl_div", "knowledge distillation loss", choices=("kl_div", "m3_kd_loss")),
            Option("negatives_cross_device", bool, True, "share negatives across processes (multi-process only "
                   "unless asked for)"),
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
    for key in (k for k in kw if k not in spec):
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


def _name_kind(name: str) -> str | None:
    name = name.lower()
    if "rerank" in name:
        return "rerank"
    if "embed" in name or name.startswith("bge"):
        return "embed"
    return None


def _architecture_kind(archs: Sequence[str]) -> str | None:
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "rerank"
    if any(a.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")) for a in archs):
        return "decoder"
    if archs and all(a.endswith("Model") for a in archs):  # BertModel, XLMRobertaModel: a bare encoder
        return "embed"
    return None  # ForMaskedLM, ForPreTraining, none given: a pretrained encoder that could become either


def detect_kind(model: Path, model_kind: Any = None) -> str:
    """'embed' or 'rerank': `model_kind` when given, else from config.json's architectures and the folder name."""
    try:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        archs = [str(a) for a in config.get("architectures") or []]
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"cannot read {model / 'config.json'}: {exc}") from None
    by_arch = _architecture_kind(archs)
    if by_arch == "decoder":
        raise ConfigError(
            f"{model} is a decoder model ({', '.join(archs)}): finetune.flagembedding runs FlagEmbedding's "
            "encoder-only trainers (BERT, XLM-RoBERTa, ... embedders and rerankers)"
        )
    if model_kind is not None:
        kind = KIND_ALIASES.get(str(model_kind).strip().lower()) if isinstance(model_kind, str) else None
        if kind is None:
            problem = f"'model_kind': must be one of 'embed', 'rerank', got {model_kind!r}"
            raise OptionTypeError("flagembedding", [problem])
        return kind
    by_name = _name_kind(model.name)
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


def check_lengths(model: Path, kind: str, options: dict[str, Any]) -> None:
    """Sequence lengths the model's position embeddings can hold (else training dies mid-run on the first long text).

    An embedder encodes queries and passages separately; a reranker encodes query + passage as one sequence.
    """
    try:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        positions = config.get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(positions, int):
        return
    if "roberta" in str(config.get("model_type", "")):  # RoBERTa's position ids start after the padding index
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    q, p = options["query_max_len"], options["passage_max_len"]
    longest = q + p if kind == "rerank" else max(q, p)
    if longest > positions:
        what = f"query_max_len + passage_max_len = {longest}" if kind == "rerank" else f"a max_len of {longest}"
        raise OptionsError(f"flagembedding ({kind})", [
            f"{what} exceeds the {positions} positions of {model.name} (max_position_embeddings): lower "
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
