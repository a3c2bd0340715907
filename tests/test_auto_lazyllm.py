"""finetune.auto as LazyLLM users call it: rerankers whose query + passage fit the model, `source=` / `model_type=`.

LazyLLM's auto-rerank test fine-tunes bge-reranker-large (XLM-RoBERTa large: 514 position embeddings, of which 512
are usable because RoBERTa's position ids start after the padding index) and bge-reranker-v2-m3 (8194 positions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lazytune import ConfigError, ModelNotFoundError, OptionsError, finetune
from tests.test_auto import CONFIGS, H100, RecordedGpus


def reranker(tmp_path: Path, name: str) -> Path:
    """bge-reranker-large's config: xlm-roberta-base.json's family at the large size, as a sequence classifier;
    bge-reranker-v2-m3 from its own stored config."""
    folder = tmp_path / name
    folder.mkdir()
    if name == "bge-reranker-large":
        config = json.loads((CONFIGS / "xlm-roberta-base.json").read_text())
        config.update(architectures=["XLMRobertaForSequenceClassification"], hidden_size=1024, num_hidden_layers=24,
                      num_attention_heads=16, intermediate_size=4096)  # fmt: skip
    else:
        config = json.loads((CONFIGS / f"{name}.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name, passage", [("bge-reranker-large", 512 - 256), ("bge-reranker-v2-m3", 1024)])
def test_reranker_query_plus_passage_fit_the_positions(tmp_path: Path, name: str, passage: int) -> None:
    trainer = finetune.auto(reranker(tmp_path, name), tmp_path / "out", launcher=RecordedGpus(H100, 1))
    o = trainer.options
    assert trainer.backend == "flagembedding" and o["model_kind"] == "rerank"
    assert o["query_max_len"] == 256 and o["passage_max_len"] == passage
    assert o["query_max_len"] + o["passage_max_len"] <= (512 if name == "bge-reranker-large" else 8192)
    if name == "bge-reranker-large":
        assert "query_max_len 256 + passage_max_len 256" in trainer.explain()


def test_reranker_with_the_users_query_length(tmp_path: Path) -> None:
    trainer = finetune.auto(reranker(tmp_path, "bge-reranker-large"), tmp_path / "out",
                            launcher=RecordedGpus(H100, 1), query_max_len=64)  # fmt: skip
    assert trainer.options["query_max_len"] + trainer.options["passage_max_len"] == 512


def test_reranker_lengths_that_overflow_are_refused(tmp_path: Path) -> None:
    """The flagembedding check counts RoBERTa's padding offset too: 256 + 258 = 514 > 512 usable."""
    with pytest.raises(OptionsError, match="exceeds the 512 positions"):
        finetune.flagembedding(reranker(tmp_path, "bge-reranker-large"), tmp_path / "out", query_max_len=256,
                               passage_max_len=258)  # fmt: skip


def test_source_and_model_type_are_lazyllms(tmp_path: Path) -> None:
    model = reranker(tmp_path, "bge-reranker-large")
    trainer = finetune.auto(model, tmp_path / "out", source="huggingface", model_type="rerank",
                            launcher=RecordedGpus(H100, 1))  # fmt: skip
    assert trainer.backend == "flagembedding" and "source='huggingface' ignored" in trainer.explain()
    positional = finetune.auto(model, tmp_path / "out2", "modelscope", launcher=RecordedGpus(H100, 1))
    assert positional.target.merge == tmp_path / "out2" / "lazyllm_merge"  # not read as merge_path


@pytest.mark.parametrize("model_type, match", [("tts", "not supported"), ("llmm", "expected one of")])
def test_model_type_refused(tmp_path: Path, model_type: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        finetune.auto(reranker(tmp_path, "bge-reranker-large"), tmp_path / "out", model_type=model_type)


def test_missing_model_and_unknown_keyword_together(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        finetune.auto(tmp_path / "internlm2-chat-7b", tmp_path / "out", learning_rat=1e-4)
    assert "base model not found" in str(info.value) and "'learning_rate'" in str(info.value)
