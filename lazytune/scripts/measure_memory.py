"""Measure the real peak memory of LoRA training steps on a random-weight model built from a config.json.

Standalone (never imports lazytune); run it with a backend environment's Python (torch + transformers + peft):

    python measure_memory.py --config Qwen2.5-7B/config.json --micro-batch 4 --ctx-len 1024 [--checkpointing]
                             [--qlora] [--lora-r 8] [--steps 3] [--device cuda|cpu]

It does what LLaMA-Factory does for LoRA (all linear layers, dropout 0.05, trainable parameters in fp32, AdamW,
SDPA attention, bf16 weights on GPU / fp32 on CPU) on random token ids of exactly ctx_len, and prints one JSON line:
GPU: torch.cuda.max_memory_allocated / max_memory_reserved (GiB); CPU: peak RSS minus the RSS before the model.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**30


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def quantized_random_model(config, dtype, kwargs: dict):  # noqa: ANN001, ANN201 - transformers objects
    """A random model loaded in 4-bit as LLaMA-Factory loads QLoRA: `from_config` takes no quantization_config (it
    raised a TypeError), so the random bf16 weights are saved to a temporary folder and loaded back quantized."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="measure-qlora-") as folder:
        with torch.device("cuda"):
            AutoModelForCausalLM.from_config(config, **kwargs).save_pretrained(folder)
        torch.cuda.empty_cache()
        return AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, device_map={"": 0}, **kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--ctx-len", type=int, default=1024)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--qlora", action="store_true")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", choices=("cuda", "cpu"), default=None)
    args = p.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.qlora and device != "cuda":
        print("measure_memory: --qlora needs a CUDA GPU (bitsandbytes 4-bit layers run on CUDA only)", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = AutoConfig.from_pretrained(args.config)
    config.use_cache = False
    base_rss = rss_gib()
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    if args.qlora:
        model = quantized_random_model(config, dtype, kwargs)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, **kwargs)
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    model.train()
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    vocab = config.get_text_config().vocab_size
    started = time.time()
    for _ in range(args.steps):
        ids = torch.randint(0, vocab, (args.micro_batch, args.ctx_len), device=device)
        with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    out = {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "micro_batch": args.micro_batch, "ctx_len": args.ctx_len, "checkpointing": args.checkpointing,
        "qlora": args.qlora, "lora_r": args.lora_r, "steps": args.steps,
        "seconds_per_step": round((time.time() - started) / args.steps, 3),
        "params": sum(q.numel() for q in model.parameters()),
    }  # fmt: skip
    if device == "cuda":
        out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    else:
        out["peak_rss_gib"] = round(peak_rss_gib() - base_rss, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
