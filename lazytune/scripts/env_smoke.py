"""A tiny smoke run inside a backend environment, run by `lazytune env install` before the environment counts as
installed (imports alone once passed while every run died at start). No network, no files outside WORK.

usage: python env_smoke.py {none,torch,causal-lora,flagembedding} WORK
"""

from __future__ import annotations

import sys
import time


def _torch() -> str:
    import torch

    x = torch.ones(8, 8)
    assert float((x @ x).sum()) == 512.0
    return f"torch {torch.__version__}"


def _causal_lora(work: str) -> str:
    """A 2-layer random Llama with a LoRA adapter: forward, backward, save and reload."""
    import peft
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 64, (2, 16))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    model.save_pretrained(work)
    return f"transformers {transformers.__version__}, peft {peft.__version__}, loss {float(loss):.3f}"


def _flagembedding(work: str) -> str:
    """FlagEmbedding's encoder-only embedder model around a tiny random BERT: one contrastive step."""
    import torch
    import transformers
    from FlagEmbedding.finetune.embedder.encoder_only.base import BiEncoderOnlyEmbedderModel

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64,
    )  # fmt: skip
    base = transformers.BertModel(config)
    model = BiEncoderOnlyEmbedderModel(base, tokenizer=None, temperature=0.02, sentence_pooling_method="mean")
    q = {"input_ids": torch.randint(0, 64, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    p = {"input_ids": torch.randint(0, 64, (4, 8)), "attention_mask": torch.ones(4, 8, dtype=torch.long)}
    out = model(queries=q, passages=p)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    return f"transformers {transformers.__version__}, embedder loss {float(out.loss):.3f}"


def main(argv: list[str]) -> int:
    kind, work = argv[1], argv[2]
    started = time.monotonic()
    if kind == "none":  # an environment without torch (lazytune's own tests)
        print("smoke none ok")
        return 0
    parts = [_torch()]
    if kind == "causal-lora":
        parts.append(_causal_lora(work))
    elif kind == "flagembedding":
        parts.append(_flagembedding(work))
    elif kind != "torch":
        raise SystemExit(f"unknown smoke kind {kind!r}")
    print(f"smoke {kind} ok in {time.monotonic() - started:.1f} s: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
