"""LoRA fine-tuning with CoLLiE (collie-lm 1.0.7): CollieConfig + CollieModelForCausalLM + Trainer + peft LoRA.

Standalone (never imports lazytune); run with the `collie` environment's Python, one process per GPU, started by
torchrun (WORLD_SIZE/RANK set) or srun (SLURM_PROCID set); a single process without either runs as world size 1:

    python collie_train.py --config collie_config.json [--prepare-only]

The config (written by finetune.collie's plan) holds the base model, data files, prompt template, CoLLiE's
parallel/batch settings and the LoRA settings. Data: alpaca records (`instruction`, optional `input`, `output`) in a
JSON array or JSON lines. Only the response is trained on (the prompt's labels are -100, CoLLiE's input/output
format). Rank 0 writes a LLaMA-Factory style `trainer_log.jsonl` and the adapter (adapter_config.json +
adapter_model.bin, via Trainer.save_peft) into `output_dir`.

`--prepare-only` reads the config, data and tokenizer, builds the prompts, CoLLiE's config, the LoRA config and
the tokenized dataset, then exits: everything before the model, whose creation starts NCCL. It needs no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path


def fail(message: str, code: int = 2) -> int:
    print(f"collie_train: error: {message}", file=sys.stderr, flush=True)
    return code


def read_records(path: Path) -> list[dict]:
    """Records of a JSON array or JSON-lines file."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
    else:
        data = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
    for index, record in enumerate(data):
        if not isinstance(record, dict) or not isinstance(record.get("output"), str):
            raise ValueError(f"{path}, record {index}: expected an object with a string 'output' (alpaca format)")
        if not isinstance(record.get("instruction", ""), str) or not isinstance(record.get("input", ""), str):
            raise ValueError(f"{path}, record {index}: 'instruction' and 'input' must be strings")
    return data


def build_examples(records: list[dict], template: dict, eos_token: str | None) -> list[dict]:
    """CoLLiE input/output pairs: the alpaca prompt as `input`, the response (+ eos) as `output`."""
    examples = []
    for record in records:
        instruction, extra = record.get("instruction", ""), record.get("input", "")
        if extra:
            prompt = template["prompt_input"].format(instruction=instruction, input=extra)
        else:
            prompt = template["prompt_no_input"].format(instruction=instruction)
        examples.append({"input": prompt, "output": record["output"] + (eos_token or "")})
    return examples


def single_process_env() -> None:
    """Without torchrun or srun, run as a world of one (CoLLiE reads these to start torch.distributed)."""
    if "WORLD_SIZE" in os.environ or "SLURM_PROCID" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def make_log_callback(callback_base: type, path: Path, rank: int, learning_rate: float) -> object:
    """A CoLLiE Callback appending LLaMA-Factory style lines to trainer_log.jsonl (rank 0 only)."""

    class TrainerLog(callback_base):
        def __init__(self) -> None:
            self.start = time.time()

        def on_train_batch_end(self, trainer, loss) -> None:  # noqa: ANN001 - CoLLiE's signature
            if rank != 0:
                return
            step = trainer.global_batch_idx + 1
            total = max(1, trainer.steps_per_epoch * trainer.config.train_epochs)
            elapsed = time.time() - self.start
            try:
                lr = float(trainer.lr)
            except (TypeError, ValueError, AttributeError):
                lr = learning_rate
            entry = {
                "current_steps": step, "total_steps": total, "loss": round(float(loss), 6), "lr": lr,
                "epoch": round(step / max(1, trainer.steps_per_epoch), 3), "percentage": round(100 * step / total, 2),
                "elapsed_time": round(elapsed, 2), "remaining_time": round(elapsed / step * max(0, total - step), 2),
            }  # fmt: skip
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    return TrainerLog()


def precision(cfg: dict, torch) -> str:  # noqa: ANN001 - the torch module, imported late
    """The plan's choice; else bf16 from compute capability 8.0 up (is_bf16_supported() says yes on a T4)."""
    if cfg.get("precision"):
        return cfg["precision"]
    return "bf16" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="collie_config.json written by finetune.collie")
    ap.add_argument("--prepare-only", action="store_true", help="check config, data and tokenizer; no training")
    args = ap.parse_args()

    cfg = json.loads(Path(args.config).read_text(encoding="utf-8"))
    base = Path(cfg["base_model"])
    out = Path(cfg["output_dir"])
    parallel = cfg["collie"]
    want = parallel["dp_size"] * parallel["pp_size"] * parallel["tp_size"]

    try:
        records = [r for f in cfg["data_files"] for r in read_records(Path(f))]
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    if not records:
        return fail(f"no training records in {', '.join(cfg['data_files'])}")

    from transformers import AutoTokenizer

    # finetune.collie decides trust_remote_code from the model folder (config.json auto_map); older configs lack it
    remote_code = bool(cfg.get("trust_remote_code", True))
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = build_examples(records, cfg["prompt_template"], tokenizer.eos_token)
    # CoLLiE's objects up to (not including) the model, which starts torch.distributed (NCCL) and needs CUDA.
    from collie import Callback, CollieConfig, CollieDatasetForTraining, CollieModelForCausalLM, Trainer, env
    from peft import LoraConfig, TaskType

    config = CollieConfig.from_pretrained(str(base), trust_remote_code=remote_code)
    for key, value in parallel.items():
        setattr(config, key, value)
    config.use_flash = False  # flash-attn is not part of the environment
    config.peft_config = LoraConfig(task_type=TaskType.CAUSAL_LM, **cfg["lora"])
    max_length = getattr(config.model_config, "max_position_embeddings", None) or -1
    dataset = CollieDatasetForTraining(examples, tokenizer=tokenizer, max_length=max_length)
    trained = [sum(1 for x in dataset[i]["labels"] if x != -100) for i in range(min(len(dataset), 200))]
    if not any(trained):
        return fail(
            f"every label is masked in the first {len(trained)} examples: nothing would be learned "
            f"(responses empty, or prompts longer than max_length={max_length})"
        )
    print(
        f"collie_train: {len(examples)} examples, longest of the first {len(trained)}: "
        f"{max(len(dataset[i]['input_ids']) for i in range(len(trained)))} tokens; "
        f"dp={parallel['dp_size']} pp={parallel['pp_size']} tp={parallel['tp_size']}, "
        f"gradient accumulation {parallel['gradient_accumulation_steps']}, LoRA on {config.peft_config.target_modules}",
        flush=True,
    )
    if args.prepare_only:
        print("collie_train: prepare-only: config, data, tokenizer and CoLLiE settings are fine", flush=True)
        return 0

    import torch

    if not torch.cuda.is_available():
        return fail(
            "CoLLiE needs NVIDIA GPUs (it initialises NCCL and calls .cuda() unconditionally) and torch sees none "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}). "
            "Use finetune.alpacalora or finetune.llamafactory on CPU.",
            code=3,
        )
    single_process_env()
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    if world != want:
        return fail(f"dp_size x pp_size x tp_size = {want} but this job has {world} process(es)")
    config.ds_config = {
        precision(cfg, torch): {"enabled": True},
        "train_micro_batch_size_per_gpu": parallel["train_micro_batch_size"],
        "gradient_accumulation_steps": parallel["gradient_accumulation_steps"],
        "zero_optimization": {"stage": 0},
        "steps_per_print": 2**31 - 1,
    }
    model = CollieModelForCausalLM.from_pretrained(str(base), config=config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg["learning_rate"])
    out.mkdir(parents=True, exist_ok=True)
    log_path = Path(cfg["trainer_log"])
    if env.rank == 0:
        log_path.unlink(missing_ok=True)
    trainer = Trainer(
        model=model,
        config=config,
        tokenizer=tokenizer,
        optimizer=optimizer,
        train_dataset=dataset,
        callbacks=[make_log_callback(Callback, log_path, env.rank, cfg["learning_rate"])],
    )
    started = time.time()
    trainer.train()
    trainer.save_peft(str(out))
    if env.rank == 0:
        if not (out / "adapter_config.json").is_file():
            return fail(f"CoLLiE finished but wrote no adapter_config.json into {out}", code=4)
        print(
            f"collie_train: trained {len(examples)} examples x {parallel['train_epochs']} epoch(s) in "
            f"{time.time() - started:.1f} s; adapter in {out}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
