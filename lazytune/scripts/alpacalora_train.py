"""lazytune's alpaca-lora trainer: LoRA fine-tuning of a causal LM on alpaca records (instruction, input, output).

Standalone (never imports lazytune). Run with the alpacalora environment's Python, as one process or under torchrun
(DDP; gloo on CPU), e.g.:

    python alpacalora_train.py --base-model M --data train.json --output-dir OUT --prompt-template alpaca.json

Each record becomes alpaca-lora's sample: `prompt(template, instruction, input) + output` tokenized in one call,
truncated to --cutoff-len tokens, eos appended when missing and there is room (see build_sample). Then LazyLLM's
filter: samples of --filter-nums tokens or more (after the cut) are dropped. With --train-on-inputs false the prompt
tokens are masked (-100), so the loss covers the response tokens only, and samples whose response was cut away
entirely are dropped (if that leaves nothing, the run fails before the model is loaded).
Gradient accumulation = batch_size / (micro_batch_size x world size). Checkpoints go to OUT/checkpoint-N (resume with
--resume-from-checkpoint); rank 0 alone writes the adapter,
OUT/trainer_log.jsonl (one line per log step) and OUT/train_data_stats.json (token counts + decoded examples).
--data-only stops after the data checks and train_data_stats.json (no model is loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run by path in a backend env: its sibling modules
from script_utils import jsonl_logger, read_records  # noqa: E402

IGNORE = -100


class TrainError(Exception):
    """A problem with the inputs, reported as one clear line (exit code 2) instead of a traceback."""


def rank() -> int:
    return int(os.environ.get("RANK", "0"))  # set by torchrun; absent in a single process


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def say(*parts: object) -> None:
    if rank() == 0:
        print("alpacalora:", *parts, flush=True)


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def names(text: str) -> list[str]:
    return [p.strip().strip("'\"") for p in text.strip().strip("[]").split(",") if p.strip().strip("'\"")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--data", nargs="+", required=True, help="alpaca JSON array / JSON lines files")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--prompt-template", required=True, help="template JSON: prompt_input, prompt_no_input")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--num-epochs", type=float, default=2)
    ap.add_argument("--learning-rate", type=float, default=5e-4)
    ap.add_argument("--cutoff-len", type=int, default=1030)
    ap.add_argument("--filter-nums", type=int, default=1024)
    ap.add_argument("--val-set-size", type=int, default=200)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--lora-target-modules", type=names, required=True)
    ap.add_argument("--modules-to-save", type=names, default=None)
    ap.add_argument("--deepspeed", default=None)
    ap.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=None,
                    help="the plan's choice (bf16 from compute capability 8.0 up); default: from this machine's GPU")
    ap.add_argument("--gradient-checkpointing", type=boolean, default=False,
                    help="recompute activations in the backward pass: much less GPU memory, ~30%% slower")
    ap.add_argument("--train-on-inputs", type=boolean, default=True)
    ap.add_argument("--show-prompt", type=boolean, default=False)
    ap.add_argument("--resume-from-checkpoint", type=boolean, default=False)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--lr-scheduler-type", default="cosine", help="LazyLLM's copy: cosine; alpaca-lora: linear")
    ap.add_argument("--load-best-model-at-end", type=boolean, default=True,
                    help="with a validation set, end with the checkpoint of the lowest eval loss (as alpaca-lora)")
    ap.add_argument("--logging-steps", type=int, default=10)
    ap.add_argument("--save-steps", type=int, default=200)
    ap.add_argument("--eval-steps", type=int, default=200)
    ap.add_argument("--save-total-limit", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--val-data", nargs="+", default=None,
                    help="evaluation records from these files (instead of a val_set_size split of --data)")
    ap.add_argument("--trust-remote-code", type=boolean, default=False,
                    help="load the model's own code (config.json auto_map: InternLM2, ChatGLM, Baichuan, ...)")
    ap.add_argument("--run-name", default="LLM")
    ap.add_argument("--data-only", action="store_true",
                    help="tokenize, check and write train_data_stats.json, then exit without loading the model")
    return ap.parse_args(argv)


# -- data ------------------------------------------------------------------------------------------------------------
def load_template(path: Path) -> dict:
    template = json.loads(path.read_text(encoding="utf-8"))
    for key in ("prompt_input", "prompt_no_input"):
        if not isinstance(template.get(key), str):
            raise TrainError(f"prompt template {path} has no {key!r} string")
    return template


def make_prompt(template: dict, instruction: str, input_text: str | None) -> str:
    text = template["prompt_input"] if input_text else template["prompt_no_input"]
    values = {"instruction": instruction, "input": input_text or ""}
    # one pass, so braces inside the user's text are never re-expanded
    return re.sub(r"\{(instruction|input)\}", lambda m: values[m.group(1)], text)


def build_sample(tokenizer, template: dict, rec: dict, cutoff_len: int, train_on_inputs: bool) -> dict:
    """alpaca-lora's `generate_and_tokenize_prompt` (tloen/alpaca-lora finetune.py), token for token.

    prompt + output are tokenized in ONE call (truncated to cutoff_len), so the response starts with the tokens the
    tokenizer gives that text in context (no extra sentencepiece `▁`, byte-level merges across the boundary kept);
    eos is appended only when the ids don't already end with it and there is room under cutoff_len. With
    train_on_inputs false the first len(tokenizer(prompt)) labels are masked, as upstream does.
    """
    prompt = make_prompt(template, rec["instruction"], rec.get("input"))
    eos = tokenizer.eos_token_id
    ids = list(tokenizer(prompt + (rec["output"] or ""), truncation=True, max_length=cutoff_len)["input_ids"])
    if (not ids or ids[-1] != eos) and len(ids) < cutoff_len:
        ids.append(eos)
    n_prompt = len(tokenizer(prompt, truncation=True, max_length=cutoff_len)["input_ids"])
    labels = list(ids) if train_on_inputs else ([IGNORE] * n_prompt + ids[n_prompt:])[: len(ids)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "n_prompt": min(n_prompt, len(ids))}


def tokenize_all(args: argparse.Namespace, tokenizer, template: dict) -> tuple[list[dict], dict]:
    """Token ids and labels for every usable record, plus counts of what was dropped and why.

    filter_nums is LazyLLM's rule (its alpaca-lora copy): cut to cutoff_len first, then keep a sample only when it
    has fewer than filter_nums tokens. A sample whose cut left no response token is kept when train_on_inputs is
    true (alpaca-lora trains on its prompt) and dropped when false (all its labels would be masked).
    """
    samples, shortest_prompt = [], None
    stats = {"records": 0, "dropped_over_filter_nums": 0, "dropped_no_response_tokens": 0,
             "cut_before_response": 0}  # fmt: skip
    for path in args.data:
        for rec in read_records(Path(path)):
            stats["records"] += 1
            sample = build_sample(tokenizer, template, rec, args.cutoff_len, args.train_on_inputs)
            if len(sample["input_ids"]) >= args.filter_nums:
                stats["dropped_over_filter_nums"] += 1
                continue
            if len(sample["input_ids"]) == sample["n_prompt"]:  # the cut left no response token
                stats["cut_before_response"] += 1
                prompt = make_prompt(template, rec["instruction"], rec.get("input"))
                n_prompt = len(tokenizer(prompt)["input_ids"])  # uncut, for the message below
                shortest_prompt = n_prompt if shortest_prompt is None else min(shortest_prompt, n_prompt)
                if not args.train_on_inputs:  # every label masked: nothing to learn from this sample
                    stats["dropped_no_response_tokens"] += 1
                    continue
            samples.append(sample)
    kept_responses = len(samples) - (stats["cut_before_response"] - stats["dropped_no_response_tokens"])
    if not samples or kept_responses == 0:
        if stats["cut_before_response"]:
            raise TrainError(
                f"cutoff_len={args.cutoff_len} leaves no response tokens: in every sample the prompt alone fills "
                f"the {args.cutoff_len} tokens (shortest prompt: {shortest_prompt} tokens with this template and "
                f"tokenizer). Raise cutoff_len above the prompt length plus the response length."
            )
        raise TrainError(
            f"no usable samples: all {stats['records']} records have filter_nums={args.filter_nums} tokens or more "
            f"(after the cut to cutoff_len={args.cutoff_len}); raise filter_nums"
        )
    return samples, stats


def split(samples: list[dict], val_set_size: int, seed: int) -> tuple[list[dict], list[dict]]:
    if val_set_size <= 0:
        return samples, []
    if val_set_size >= len(samples):
        raise TrainError(f"val_set_size={val_set_size} leaves no training samples: only {len(samples)} usable "
                         "samples; lower val_set_size (0 disables evaluation)")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    val = [samples[i] for i in order[:val_set_size]]
    train = [samples[i] for i in sorted(order[val_set_size:])]
    return train, val


def describe_data(tokenizer, train: list[dict], val: list[dict], stats: dict, args: argparse.Namespace) -> dict:
    """Token counts (what the loss covers) and the first samples decoded, for the log and for tests."""
    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    label_tokens = sum(sum(1 for t in s["labels"] if t != IGNORE) for s in train)
    input_tokens = sum(len(s["input_ids"]) for s in train)
    prompt_tokens = sum(s["n_prompt"] for s in train)
    return {
        **stats, "train_samples": len(train), "val_samples": len(val), "train_on_inputs": args.train_on_inputs,
        "cutoff_len": args.cutoff_len, "input_tokens": input_tokens, "prompt_tokens": prompt_tokens,
        "response_tokens": input_tokens - prompt_tokens, "label_tokens": label_tokens,
        "examples": [{"text": decode(s["input_ids"]), "labels": decode([t for t in s["labels"] if t != IGNORE])}
                     for s in train[:3]],
    }  # fmt: skip


# -- training --------------------------------------------------------------------------------------------------------
def complete(checkpoint: Path) -> bool:
    """trainer_state.json is written last: a run killed mid-save leaves it missing, empty or cut short."""
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint-N folder."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and complete(p)]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def train(args: argparse.Namespace) -> None:
    world = world_size()
    per_step = args.micro_batch_size * world
    if args.batch_size % per_step:
        raise TrainError(f"batch_size={args.batch_size} is not a multiple of micro_batch_size x processes = "
                         f"{args.micro_batch_size} x {world}")
    grad_accum = args.batch_size // per_step
    out = Path(args.output_dir)
    resume = last_checkpoint(out) if args.resume_from_checkpoint else None
    if args.resume_from_checkpoint and resume is None:
        raise TrainError(f"resume_from_checkpoint: no complete checkpoint-N folder in {out} to resume from")
    template = load_template(Path(args.prompt_template))
    if args.deepspeed:
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise TrainError(f"deepspeed={args.deepspeed} but deepspeed is not installed for {sys.executable}; "
                             "install it there or leave deepspeed unset") from None

    import torch
    import transformers as tf

    tokenizer = tf.AutoTokenizer.from_pretrained(args.base_model, trust_remote_code=args.trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise TrainError(f"the tokenizer of {args.base_model} has no eos token: responses could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    samples, stats = tokenize_all(args, tokenizer, template)
    if args.val_data:  # evaluation data of its own: nothing is split off the training data
        val_set, _ = tokenize_all(argparse.Namespace(**{**vars(args), "data": args.val_data}), tokenizer, template)
        train_set = samples
        for s in val_set:
            del s["n_prompt"]
    else:
        train_set, val_set = split(samples, args.val_set_size, args.seed)
    info = describe_data(tokenizer, train_set, val_set, stats, args)
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_data_stats.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", "utf-8")
    say("data:", json.dumps({k: v for k, v in info.items() if k != "examples"}))
    if args.show_prompt:
        say("first sample:\n" + info["examples"][0]["text"] + "\n--- trained on (labels) ---\n"
            + info["examples"][0]["labels"])
    if args.data_only:
        return
    for s in samples:
        del s["n_prompt"]

    precision = args.precision or default_precision(torch)
    cuda = precision != "fp32" and torch.cuda.is_available()
    if precision != "fp32" and not cuda:
        raise TrainError(f"precision {precision} needs a CUDA GPU and this process sees none")
    bf16, fp16 = precision == "bf16", precision == "fp16"
    dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    tf.set_seed(args.seed)  # the LoRA weights are initialised before the Trainer would seed anything
    load: dict = {"dtype": dtype, "low_cpu_mem_usage": True}  # transformers 4.x: no full fp32 copy in host RAM
    if cuda and not args.deepspeed:  # each rank loads straight onto its own GPU (not N full copies in host RAM)
        load["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = tf.AutoModelForCausalLM.from_pretrained(args.base_model, trust_remote_code=args.trust_remote_code, **load)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings: LoRA's checkpointed blocks still get gradients

    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if args.lora_target_modules == ["all-linear"] else args.lora_target_modules
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, modules_to_save=args.modules_to_save or None, bias="none",
                      task_type="CAUSAL_LM")  # fmt: skip
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:  # e.g. target modules that this architecture doesn't have
        raise TrainError(f"cannot add LoRA to {args.base_model} (lora_target_modules={args.lora_target_modules}): "
                         f"{exc}") from None
    if fp16:  # the fp16 grad scaler refuses fp16 trainable weights (modules_to_save copies are in the base dtype)
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    if rank() == 0:
        model.print_trainable_parameters()

    training_args = tf.TrainingArguments(
        output_dir=str(out), run_name=args.run_name, seed=args.seed,
        per_device_train_batch_size=args.micro_batch_size, per_device_eval_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=grad_accum, num_train_epochs=args.num_epochs, learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps, optim="adamw_torch", logging_steps=args.logging_steps,
        lr_scheduler_type=args.lr_scheduler_type, load_best_model_at_end=bool(val_set) and args.load_best_model_at_end,
        eval_strategy="steps" if val_set else "no", eval_steps=args.eval_steps if val_set else None,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        bf16=bf16, fp16=fp16, use_cpu=not cuda, deepspeed=args.deepspeed or None,
        ddp_find_unused_parameters=False if world > 1 else None, report_to="none", remove_unused_columns=False,
        disable_tqdm=True,  # progress comes from trainer_log.jsonl; a bar full of \r makes the log unreadable
    )  # fmt: skip
    say(f"world size {training_args.world_size}, micro batch {args.micro_batch_size}, gradient accumulation "
        f"{grad_accum}, effective batch {args.micro_batch_size * grad_accum * training_args.world_size}, "
        f"device {training_args.device}" + (f", resuming from {resume}" if resume else ""))
    if training_args.world_size != world:
        raise TrainError(f"torch.distributed sees {training_args.world_size} processes, WORLD_SIZE says {world}")
    collator = tf.DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    trainer = tf.Trainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=val_set or None,
                      data_collator=collator, callbacks=[jsonl_logger(out / "trainer_log.jsonl")])  # fmt: skip
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(out))  # rank 0 only (args.should_save): the adapter, not the base weights
    if trainer.is_world_process_zero():
        metrics = {**result.metrics, "global_step": result.global_step, "world_size": training_args.world_size,
                   "gradient_accumulation_steps": grad_accum}
        (out / "train_result.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if not (out / "adapter_config.json").is_file():
            raise TrainError(f"training finished but no adapter was written to {out}")
        say(f"adapter saved to {out} (final train loss {result.training_loss:.4f}, {result.global_step} steps)")


def default_precision(torch) -> str:  # noqa: ANN001 - the torch module, imported late
    """bf16 from compute capability 8.0 up, fp16 below, fp32 on CPU (is_bf16_supported() says yes on a T4, emulated)."""
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except TrainError as exc:
        print(f"alpacalora: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
