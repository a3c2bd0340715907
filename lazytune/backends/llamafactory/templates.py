"""Model folder -> LLaMA-Factory chat template.

Order: an explicit `template=` always wins (checked against LF's registry); then LF's own table of known model names
(exact folder name, e.g. `Qwen2.5-7B-Instruct`); then our family patterns on the folder name (base models,
fine-tuned derivatives, renamed folders); then `model_type` in config.json where it is unambiguous. Anything else
is an error that says how to pass `template=`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ...errors import ConfigError
from ...model import ModelFolder
from .keys import lf_keys

#: (pattern on the lower-cased folder name, template). First match wins: specific families before general ones.
FAMILIES: tuple[tuple[str, str], ...] = (
    # multimodal families first: their names contain the name of the language model inside
    (r"paligemma", "paligemma"),
    (r"llava.*next.*video.*(34b|yi)", "llava_next_video_yi"),
    (r"llava.*next.*video.*mistral|llava-next-video-7b-32k", "llava_next_video_mistral"),
    (r"video[-_.]?llava", "video_llava"),
    (r"llava.*next.*video", "llava_next_video"),
    (r"llama3.*llava|llava.*llama[-_.]?3", "llava_next_llama3"),
    (r"llava.*(v1\.6|next).*mistral", "llava_next_mistral"),
    (r"llava.*(v1\.6|next).*(34b|yi)", "llava_next_yi"),
    (r"llava[-_.]next[-_.](72|110)b", "llava_next_qwen"),
    (r"llava.*(v1\.6|next)", "llava_next"),
    (r"llava", "llava"),
    (r"qwen3[-_.]?omni.*(instruct|captioner)", "qwen3_omni_nothink"),
    (r"qwen3[-_.]?omni", "qwen3_omni"),
    (r"qwen2(\.5)?[-_.]?omni", "qwen2_omni"),
    (r"qwen3[-_.]?vl.*instruct", "qwen3_vl_nothink"),
    (r"qwen3[-_.]?vl", "qwen3_vl"),
    (r"qwen2(\.5)?[-_.]?vl|qvq", "qwen2_vl"),
    (r"qwen2(\.5)?[-_.]?audio", "qwen2_audio"),
    (r"glm[-_.]?4\.1v", "glm4v"),
    (r"glm[-_.]?4\.[56]v", "glm4_5v"),
    (r"minicpm[-_.]?v[-_.]?4[-_.]6", "minicpm_v_4_6"),
    (r"minicpm[-_.]?v", "minicpm_v"),
    (r"internvl", "intern_vl"),
    (r"yi[-_.]?vl", "yi_vl"),
    # language models
    (r"deepseek[-_.]?r1", "deepseekr1"),  # R1 and its Qwen / Llama distills
    (r"deepseek[-_.]?v3|deepseek[-_.]?v2\.5", "deepseek3"),
    (r"deepseek[-_.]?coder[-_.]?v2", "deepseek"),
    (r"deepseek[-_.]?coder", "deepseekcoder"),
    (r"deepseek", "deepseek"),
    (r"qwen3\.5", "qwen3_5"),
    (r"qwen3.*instruct[-_.]?2507|qwen3[-_.]?next.*instruct", "qwen3_nothink"),
    (r"qwen3", "qwen3"),
    (r"qwq|qwen", "qwen"),  # Qwen 1.5 / 2 / 2.5 (and QwQ) share the ChatML-style `qwen` template
    (r"llama[-_.]?4", "llama4"),
    (r"llama[-_.]?3\.2.*vision", "mllama"),
    (r"llama[-_.]?3", "llama3"),  # Llama 3 / 3.1 / 3.2 text / 3.3
    (r"llama[-_.]?2", "llama2"),
    (r"internlm[-_.]?(2|2[._]5|3)", "intern2"),  # LF uses intern2 for InternLM 2, 2.5 and 3
    (r"glm[-_.]?z1", "glmz1"),
    (r"glm[-_.]?4\.5", "glm4_moe"),
    (r"glm[-_.]?4", "glm4"),
    (r"chatglm3", "chatglm3"),
    (r"medgemma", "gemma3"),
    (r"gemma[-_.]?4[-_.]?e\d", "gemma4n"),
    (r"gemma[-_.]?4(?!\d*b)", "gemma4"),
    (r"gemma[-_.]?3n", "gemma3n"),
    (r"gemma[-_.]?3[-_.]?(1b|270m)", "gemma2"),  # text-only Gemma 3 sizes use LF's gemma2 template
    (r"gemma[-_.]?3", "gemma3"),
    (r"gemma[-_.]?2(?!\d*b)", "gemma2"),  # gemma-2-9b, not gemma-2b (Gemma 1)
    (r"gemma", "gemma"),
    (r"mistral[-_.]?small|devstral", "mistral_small"),
    (r"ministral[-_.]?3", "ministral3"),
    (r"ministral|mistral[-_.]?nemo", "ministral"),
    (r"mistral|mixtral|codestral", "mistral"),
    (r"phi[-_.]?4[-_.]?mini", "phi4_mini"),
    (r"phi[-_.]?4", "phi4"),
    (r"phi[-_.]?3[-_.]?small", "phi_small"),
    (r"phi[-_.]?3", "phi"),
    (r"(^|[-_.])yi([-_.]|$)", "yi"),
    (r"command[-_.]?r|aya", "cohere"),
    (r"falcon[-_.]?h1", "falcon_h1"),
    (r"falcon", "falcon"),
    (r"granite[-_.]?3", "granite3"),
    (r"gpt[-_.]?oss", "gpt_oss"),
    (r"smollm2", "smollm2"),
    (r"smollm", "smollm"),
    (r"minicpm[-_.]?4", "cpm4"),
    (r"seed[-_.]?coder", "seed_coder"),
    (r"seed[-_.]?oss", "seed_oss"),
    (r"telechat2", "telechat2"),
    (r"xuanyuan", "xuanyuan"),
    (r"yuan2", "yuan"),
    (r"exaone", "exaone"),
    (r"solar", "solar"),
    (r"zephyr", "zephyr"),
    (r"vicuna", "vicuna"),
    (r"opencoder", "opencoder"),
)

#: Families LLaMA-Factory 0.9.5 has no template for: a clear error instead of a guess.
NO_TEMPLATE = ((r"baichuan", "Baichuan"), (r"chatglm2|chatglm-6b", "ChatGLM 1/2"))

#: config.json `model_type` values that name one template unambiguously.
MODEL_TYPES = {
    "qwen3": "qwen3", "qwen3_moe": "qwen3", "qwen2": "qwen", "qwen2_moe": "qwen", "internlm2": "intern2",
    "internlm3": "intern2", "glm4": "glm4", "chatglm": "chatglm3", "gemma": "gemma", "gemma2": "gemma2",
    "gemma3_text": "gemma2", "gemma3": "gemma3", "mistral": "mistral", "mixtral": "mistral", "phi3": "phi",
    "deepseek_v3": "deepseek3", "llama4": "llama4", "mllama": "mllama",
}  # fmt: skip

HOW_TO = (
    "pass template=... (e.g. template='qwen' for Qwen2.5, 'llama3' for Llama 3.x, 'default' for a base model "
    "with no chat format, 'empty' for raw text)"
)


def known_templates() -> list[str]:
    """LLaMA-Factory's template names (from configs/llama_factory/keys.json)."""
    return lf_keys()["templates"]


def check_template(name: str) -> str:
    """`name` if LF has such a template, else ConfigError with close matches."""
    names = known_templates()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else f"; known: {', '.join(names)}"
    raise ConfigError(f"unknown LLaMA-Factory template {name!r}{hint}")


def template_for(model: ModelFolder | Path, explicit: str | None = None) -> str:
    """The template for the model folder `model` (see the module docstring for the order)."""
    if explicit:
        return check_template(explicit)
    model = ModelFolder.of(model)
    name = model.name.lower()
    exact = lf_keys()["model_templates"].get(name)
    if exact:
        return exact
    for pattern, family in NO_TEMPLATE:
        if re.search(pattern, name):
            raise ConfigError(f"LLaMA-Factory has no chat template for {family} models ({model}); {HOW_TO}")
    family = family_template(name)
    if family:
        return family
    model_type = model.model_type
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    raise ConfigError(
        f"cannot tell the chat template of {model} from its folder name"
        + (f" or its model_type {model_type!r}" if model_type else "")
        + f"; {HOW_TO}"
    )


def family_template(name: str) -> str | None:
    """The template our family patterns give a (lower-cased) model name, None when none matches."""
    for pattern, template in FAMILIES:
        if re.search(pattern, name):
            return template
    return None


def check_tokenizer(model: ModelFolder | Path, template: str, resize_vocab: bool = False) -> None:
    """The token `template` makes the end-of-text token must be in the tokenizer (or fit in a spare embedding row).

    Otherwise LLaMA-Factory adds it as a new id past the embedding and training dies with an IndexError deep in
    the first forward pass. Reads tokenizer.json only (skipped for tokenizers without one).
    """
    eos = lf_keys().get("template_eos", {}).get(template)
    if not eos or resize_vocab:
        return
    model = ModelFolder.of(model)
    tokens = model.tokenizer_tokens()
    if tokens is None:
        return
    vocab, added = tokens
    if eos in vocab or eos in added:
        return
    ids = [i for i in (*vocab.values(), *added.values()) if isinstance(i, int)]
    rows = model.vocab_size
    if rows is None:
        return
    if ids and rows > max(ids) + 1:
        return  # a spare embedding row takes the new token
    raise ConfigError(
        f"template {template!r} makes {eos!r} the end-of-text token, but the tokenizer of {model} has no such token "
        "and the model has no spare embedding row (training would crash with an IndexError): pass "
        "resize_vocab=True, or a template that fits this tokenizer (e.g. template='default')"
    )
