"""Write a tiny random causal LM (Llama or Qwen2) and an offline byte-level BPE tokenizer into a folder.

Standalone (never imports lazytune); run it with the Python of the environment that will train the model, so the
saved files match its transformers version:

    python make_tiny_model.py --out DIR [--arch llama|qwen2] [--hidden 64 --layers 2 --vocab 512]

Nothing is downloaded. The tokenizer has bos/eos/pad and the special tokens of the common chat templates (qwen's
`<|im_start|>`/`<|im_end|>`, llama3's header tokens), so LLaMA-Factory templates `default`, `empty`, `qwen`,
`llama3` all work with it. Weights use initializer_range 0.2 so that a LoRA visibly fits in a few steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",  # qwen / chatml
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",  # llama3
]  # fmt: skip

WORDS = (
    "the a an of to and in is it you that he was for on are with as I his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said each she which do their time if "
    "will way about many then them write would like so these her long make thing see him two has look more day "
    "could go come did number sound no most people my over know water than call first who may down side been now "
    "find any new work part take get place made live where after back little only round man year came show every "
    "good me give our under name very through just form sentence great think say help low line differ turn cause "
    "much mean before move right boy old too same tell does set three want air well also play small end put home "
    "read hand port large spell add even land here must big high such follow act why ask men change went light "
    "instruction input output question answer say repeat translate summarize explain list count zero one two three "
    "four five six seven eight nine ten hello world yes no true false user assistant system please thanks"
).split()


def corpus() -> list[str]:
    """A few KB of deterministic text: words, numbers, punctuation, the shapes of prompts."""
    lines = []
    for i in range(300):
        words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(4 + i % 9)]
        lines.append(" ".join(words).capitalize() + (". " if i % 3 else "? ") + str(i) + " " + str(i * 37 % 1000))
    lines += [" ".join(WORDS), "0123456789 +-*/=()[]{}<>,.;:!?'\"#@$%&_\\|~`^", "Instruction:\nInput:\nOutput:\n"]
    return lines


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [BOS, EOS, PAD, *CHAT_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, additional_special_tokens=CHAT_TOKENS,
        model_max_length=2048, padding_side="right",
    )  # fmt: skip


def build_model(arch: str, vocab: int, hidden: int, layers: int, tokenizer, seed: int):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    model = AutoModelForCausalLM.from_config(config)  # float32 (the default); no dtype kw: works on 4.x and 5.x
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write (created; existing model files are replaced)")
    ap.add_argument("--arch", choices=("llama", "qwen2"), default="llama")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512, help="BPE vocabulary size to train (specials included)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.hidden % 4 or args.hidden < 8:
        ap.error("--hidden must be a multiple of 4 and >= 8 (4 attention heads)")
    if args.vocab < 300:
        ap.error("--vocab must be >= 300 (256 bytes + special tokens + some merges)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(args.vocab)
    model = build_model(args.arch, len(tokenizer), args.hidden, args.layers, tokenizer, args.seed)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    info = {"arch": args.arch, "hidden": args.hidden, "layers": args.layers, "vocab": len(tokenizer), "params": params}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"tiny {args.arch}: {params} parameters, vocab {len(tokenizer)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
