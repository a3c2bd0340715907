"""Models that ship their own modeling code (InternLM2, ChatGLM, Baichuan, Qwen-1, ...): `trust_remote_code`.

Such a model folder carries `configuration_*.py` / `modeling_*.py` files named by `auto_map` in its config.json;
transformers loads them only with `trust_remote_code=True`, in every process that loads the model (train, merge,
export). lazytune decides once, at plan time, from the folder:

- `trust_remote_code` not given: True when the model needs it (the plan says why in a note), else left unset;
- `trust_remote_code=True`: kept;
- `trust_remote_code=False` on a model that needs it: refused before anything starts (the run would die at load).
"""

from __future__ import annotations

import os

from .model import ModelFolder

#: model_type values whose only implementation is the model's own code (no class in transformers), even when a
#: config.json lacks `auto_map` (older or hand-edited folders).
REMOTE_CODE_MODEL_TYPES = frozenset({
    "internlm", "internlm2", "internlm3", "internlm_xcomposer2", "internvl_chat", "chatglm", "baichuan", "qwen",
    "telechat", "moss", "minicpmv", "deepseek_vl_v2",
})  # fmt: skip


def remote_code_reason(model: ModelFolder | str | os.PathLike | None) -> str | None:
    """Why `model` needs trust_remote_code (a short phrase for notes and errors), or None when it does not."""
    if model is None:
        return None
    model = ModelFolder.of(model)
    auto_map = model.custom_code
    if auto_map:
        files = sorted({str(v).split(".")[0] + ".py" for v in auto_map.values() if isinstance(v, str) and "." in v})
        return f"its config.json has auto_map ({', '.join(files) or ', '.join(sorted(auto_map))})"
    if model.model_type in REMOTE_CODE_MODEL_TYPES:
        return f"model_type {model.model_type!r} has no implementation in transformers (the model ships its own code)"
    if model.tokenizer_config.get("auto_map"):
        return "its tokenizer_config.json has auto_map (the tokenizer ships its own code)"
    return None


def decide_trust_remote_code(
    model: ModelFolder | None, given: bool | None
) -> tuple[bool | None, str | None, str | None]:
    """(value to use, plan note, problem) for the `trust_remote_code` option on `model`.

    The value is None when the model needs no custom code and nothing was asked (the key is then left out).
    """
    reason = remote_code_reason(model)
    if reason is None:
        return given, None, None
    if given is False:
        return False, None, (
            f"trust_remote_code=False, but {model} needs its own code to load: {reason}. transformers would refuse "
            "to load it; pass trust_remote_code=True (after reading the model's .py files) or leave it unset"
        )
    note = f"trust_remote_code: True ({reason}); every step that loads the model runs the model folder's own code"
    return True, note, None
