"""The base model folder, read once: config.json, its kind (causal / vlm / embed / rerank), sizes, custom code,
quantization and tokenizer facts. Every backend and `finetune.auto` ask this instead of opening config.json.

    model = ModelFolder.read("models/Qwen2.5-0.5B")
    model.model_type, model.kind, model.max_positions, model.vocab_size, model.custom_code
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: model_type values of BERT-style encoders (embedders and rerankers).
ENCODERS = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "ernie", "nezha", "electra", "deberta",
                      "deberta-v2"})  # fmt: skip
#: Files sentence-transformers writes next to an embedder.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json")
KINDS = ("causal", "vlm", "embed", "rerank")
#: Files any of which makes a folder hold a tokenizer (fast, sentencepiece, BPE or WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "sentencepiece.bpe.model")  # fmt: skip


def _read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """(parsed object, None), or ({}, why not) when the file is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, str(exc)
    if not isinstance(data, dict):
        return {}, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def architecture_kind(archs: Sequence[str]) -> str | None:
    """What the architectures say: 'rerank', 'decoder', 'embed' (a bare encoder), or None (could be either)."""
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "rerank"
    if any(a.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")) for a in archs):
        return "decoder"
    if archs and all(a.endswith("Model") for a in archs):  # BertModel, XLMRobertaModel: a bare encoder
        return "embed"
    return None  # ForMaskedLM, ForPreTraining, none given: a pretrained encoder that could become either


def name_kind(name: str) -> str | None:
    """What a folder name says: 'rerank' (…reranker…), 'embed' (…embed…, bge-…), or None."""
    name = name.lower()
    if "rerank" in name:
        return "rerank"
    if "embed" in name or name.startswith("bge"):
        return "embed"
    return None


def detect_kind(config: dict[str, Any], folder: Path | None = None) -> str:
    """The model's kind: causal / vlm / embed / rerank, from the architecture, the model type and the
    sentence-transformers files next to it. The one detector: `ModelFolder.kind` and `facts_from_config` use it."""
    archs = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type", "")).lower()
    if architecture_kind(archs) == "rerank":
        return "rerank"
    if folder is not None and any((folder / f).is_file() for f in SENTENCE_TRANSFORMERS_FILES):
        return "embed"
    if model_type in ENCODERS:
        return "embed"
    joined = " ".join(archs)
    if config.get("vision_config") or "ForConditionalGeneration" in joined and "VL" in joined.upper():
        return "vlm"
    return "causal"


@dataclass(frozen=True)
class ModelFolder:
    """A Hugging Face model folder as read once: `config` is config.json ({} when missing or unreadable; then
    `config_error` says why). Properties never read the disk again except the tokenizer (read on first use)."""

    path: Path
    config: dict[str, Any]
    config_error: str | None = None
    _tokenizer: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ModelFolder:
        path = Path(path)
        config, error = _read_json(path / "config.json")
        return cls(path, config, error)

    @classmethod
    def of(cls, model: ModelFolder | str | os.PathLike) -> ModelFolder:
        """`model` itself when it is already read, else the folder read now."""
        return model if isinstance(model, ModelFolder) else cls.read(model)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def has_config(self) -> bool:
        return self.config_error is None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_type(self) -> str | None:
        value = self.config.get("model_type")
        return value if isinstance(value, str) else None

    @property
    def architectures(self) -> list[str]:
        archs = self.config.get("architectures") or []
        return [str(a) for a in archs] if isinstance(archs, list) else []

    @property
    def kind(self) -> str:
        """causal / vlm / embed / rerank (`detect_kind`)."""
        return detect_kind(self.config, self.path)

    @property
    def max_positions(self) -> int | None:
        value = self.config.get("max_position_embeddings")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def vocab_size(self) -> int | None:
        try:
            return int(self.config.get("vocab_size"))
        except (TypeError, ValueError):
            return None

    @property
    def custom_code(self) -> dict[str, Any]:
        """config.json's `auto_map` (classes shipped as Python files in the folder: needs trust_remote_code)."""
        value = self.config.get("auto_map")
        return value if isinstance(value, dict) else {}

    @property
    def quantization(self) -> dict[str, Any]:
        """config.json's `quantization_config` ({} for a model stored unquantized)."""
        value = self.config.get("quantization_config")
        return value if isinstance(value, dict) else {}

    @property
    def has_tokenizer(self) -> bool:
        """Whether the folder holds tokenizer files (`TOKENIZER_FILES`)."""
        return any((self.path / name).is_file() for name in TOKENIZER_FILES)

    @property
    def tokenizer(self) -> dict[str, Any]:
        """tokenizer.json parsed ({} when there is none or it cannot be read); read on first use, then kept."""
        if "json" not in self._tokenizer:
            self._tokenizer["json"] = _read_json(self.path / "tokenizer.json")[0]
        return self._tokenizer["json"]

    @property
    def tokenizer_config(self) -> dict[str, Any]:
        """tokenizer_config.json parsed ({} when there is none or it cannot be read); read on first use, then kept."""
        if "config" not in self._tokenizer:
            self._tokenizer["config"] = _read_json(self.path / "tokenizer_config.json")[0]
        return self._tokenizer["config"]

    def tokenizer_tokens(self) -> tuple[dict[str, int], dict[str, int]] | None:
        """(vocab, added tokens) of tokenizer.json as token -> id; None without a readable tokenizer.json."""
        tok = self.tokenizer
        if not tok:
            return None
        try:
            vocab = (tok.get("model") or {}).get("vocab") or {}
            added = {t.get("content"): t.get("id") for t in tok.get("added_tokens") or []}
        except AttributeError:
            return None
        return (vocab, added) if isinstance(vocab, dict) else None
