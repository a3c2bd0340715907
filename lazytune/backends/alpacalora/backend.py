"""finetune.alpacalora: LoRA fine-tuning with lazytune's own alpaca-lora trainer, then a merge into the base model.

Two steps, run by the launcher with the `alpacalora` environment's Python:
  train: scripts/alpacalora_train.py (transformers Trainer + peft; torchrun/DDP when the launcher runs >1 process)
  merge: scripts/merge_lora.py (base + adapter -> merge_and_unload -> safetensors, then `cp_files` from the base)
The merge runs only when training succeeded (a launcher stops at the first failing step).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from launchers import Launcher, Step

from ...data import resolve_data
from ...errors import ConfigError
from ...model import TOKENIZER_FILES
from ...options import Option, OptionSpec, raise_problems
from ...plan import Plan
from ...progress import read_trainer_log
from ..auto.gpu_table import gpu_precision
from ..base import DataArg, Finetune, script
from ..prompts import find_template, load_template
from .checks import check_records, default_lora_targets, min_prompt_tokens

ALPACALORA_OPTIONS = OptionSpec("alpacalora", [
    Option("data_path", Path, None, "training data (alpaca JSON / JSON lines); or pass the data when calling"),
    Option("batch_size", int, 64, "samples per optimizer step, all processes together", minimum=1),
    Option("micro_batch_size", int, 4, "samples per forward pass per process", minimum=1),
    Option("num_epochs", float, 2, "epochs", aliases=("num_train_epochs",), minimum=0),
    Option("learning_rate", float, 5e-4, "peak learning rate", minimum=0),
    Option("cutoff_len", int, 1030, "tokens per sample (prompt + response) after truncation", minimum=1),
    Option("filter_nums", int, 1024, "samples longer than this many tokens are dropped", minimum=1),
    Option("val_set_size", int, 200, "samples held out for evaluation (0: none)", minimum=0),
    Option("lora_r", int, 8, "LoRA rank", aliases=("lora_rank",), minimum=1),
    Option("lora_alpha", int, 32, "LoRA alpha", minimum=1),
    Option("lora_dropout", float, 0.05, "LoRA dropout", minimum=0),
    Option("lora_target_modules", list, None, "layers LoRA adapts (default: the architecture's attention "
           "projections, e.g. q_proj,v_proj for Llama/Qwen, wqkv,wo for InternLM2; 'all-linear' for all)"),
    Option("modules_to_save", list, None, "modules trained fully and saved with the adapter (e.g. embeddings)"),
    Option("deepspeed", Path, None, "DeepSpeed config JSON (GPU only)"),
    Option("gradient_checkpointing", bool, None, "recompute activations in the backward pass: much less GPU memory, "
           "~30% slower (default: on with GPUs, so a 7B model fits 24 GB with the other defaults; off on CPU)"),
    Option("prompt_template_name", str, "alpaca", "alpaca, alpaca_legacy, alpaca_short, vigogne (alpaca-lora's), "
           "puyu (LazyLLM's), or a template JSON path"),
    Option("train_on_inputs", bool, True, "False: the loss covers the response tokens only"),
    Option("show_prompt", bool, False, "print the first training sample and its label tokens"),
    Option("nccl_port", int, None, "rendezvous port of multi-process runs (default: a free port in 19000-20500)",
           minimum=1),
    Option("resume_from_checkpoint", bool, False, "continue from the last checkpoint-N in lazyllm_lora "
           "(needs overwrite=True; the checkpoints are kept)"),
    Option("warmup_steps", int, 100, "learning-rate warm-up steps", minimum=0),
    Option("lr_scheduler_type", str, "cosine", "learning-rate schedule after warm-up (LazyLLM's copy: cosine; "
           "alpaca-lora's original: linear)", choices=("cosine", "linear", "constant", "constant_with_warmup",
                                                       "cosine_with_restarts", "polynomial")),
    Option("load_best_model_at_end", bool, True, "with val_set_size > 0: the adapter is the checkpoint with the "
           "lowest eval loss, as in alpaca-lora (False: the last one; needs save_steps a multiple of eval_steps)"),
    Option("logging_steps", int, 10, "log the loss every N steps", minimum=1),
    Option("save_steps", int, 200, "write a checkpoint every N steps", minimum=1),
    Option("eval_steps", int, 200, "evaluate every N steps (when val_set_size > 0)", minimum=1),
    Option("save_total_limit", int, 3, "checkpoints kept", minimum=1),
    Option("seed", int, 42, "random seed (validation split, shuffling, LoRA init)"),
    Option("trust_remote_code", bool, None, "load the model's own code (default: True when config.json has auto_map "
           "or the architecture needs it; False refuses such a model)"),
])  # fmt: skip

_SAFE_NAME = re.compile(r"^[\w.+-]+$")


class AlpacaloraFinetune(Finetune):
    """`finetune.alpacalora(base_model, target_path, merge_path=None, model_name='LLM', cp_files='tokeniz*', ...)`.

    Trains a LoRA adapter into `<target>/lazyllm_lora` and merges it into `<target>/lazyllm_merge` (or `merge_path`),
    copying the base folder's files that match `cp_files` (a glob, or a list of globs). Returns the merge folder.
    """

    name = "alpacalora"
    env_name = "alpacalora"
    version_packages = ("torch", "transformers", "peft", "accelerate", "safetensors")

    def __init__(self, base_model: str | os.PathLike, target_path: str | os.PathLike,
                 merge_path: str | os.PathLike | None = None, model_name: str = "LLM",
                 cp_files: str | list[str] = "tokeniz*", launcher: Launcher | None = None, overwrite: bool = False,
                 **kw: Any):  # fmt: skip
        if not isinstance(model_name, str) or not _SAFE_NAME.match(model_name):
            raise ConfigError(f"finetune.alpacalora: model_name must be a plain name (letters, digits, . _ + -), "
                              f"got {model_name!r}")
        patterns = [cp_files] if isinstance(cp_files, str) else cp_files
        if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"finetune.alpacalora: cp_files must be a glob or a list of globs, got {cp_files!r}")
        if any("/" in p or p.startswith("..") for p in patterns):
            raise ConfigError(f"finetune.alpacalora: cp_files are globs of file names in the base folder, "
                              f"got {cp_files!r}")
        super().__init__(base_model, target_path, merge_path=merge_path, launcher=launcher, overwrite=overwrite, **kw)
        self.model_name = model_name
        self.cp_files = [p for p in patterns if p]

    @classmethod
    def option_spec(cls) -> OptionSpec:
        return ALPACALORA_OPTIONS

    @property
    def template_path(self) -> Path:
        """The prompt template file (`prompt_template_name`: a shipped name or a JSON file)."""
        return find_template(self.options["prompt_template_name"])

    def validate_options(self, kw: dict[str, Any]) -> dict[str, Any]:
        if kw.get("deepspeed") == "":  # LazyLLM's way of saying "no DeepSpeed"
            kw = {k: v for k, v in kw.items() if k != "deepspeed"}
        o = super().validate_options(kw)
        problems = []
        if o.get("lora_target_modules") is None:
            try:
                o["lora_target_modules"] = default_lora_targets(self.model)
            except ConfigError as exc:
                problems.append(str(exc))
        elif not o["lora_target_modules"]:
            problems.append("lora_target_modules is empty")
        if o["micro_batch_size"] > o["batch_size"]:
            problems.append(f"micro_batch_size={o['micro_batch_size']} is larger than batch_size={o['batch_size']}")
        elif o["batch_size"] % o["micro_batch_size"]:
            problems.append(f"batch_size={o['batch_size']} is not a multiple of micro_batch_size="
                            f"{o['micro_batch_size']}")
        if o["num_epochs"] <= 0:
            problems.append(f"num_epochs must be > 0, got {o['num_epochs']}")
        if o.get("nccl_port") is not None and not 1024 <= o["nccl_port"] <= 65535:
            problems.append(f"nccl_port must be a TCP port in 1024-65535, got {o['nccl_port']}")
        if o["lora_dropout"] >= 1:
            problems.append(f"lora_dropout must be < 1, got {o['lora_dropout']}")
        if o["val_set_size"] and o["load_best_model_at_end"] and o["save_steps"] % o["eval_steps"]:
            problems.append(f"load_best_model_at_end=True needs save_steps ({o['save_steps']}) to be a multiple of "
                            f"eval_steps ({o['eval_steps']}): checkpoints are chosen by their eval loss; change "
                            "them or pass load_best_model_at_end=False")  # fmt: skip
        if o.get("deepspeed") and not Path(o["deepspeed"]).is_file():
            problems.append(f"deepspeed config not found: {o['deepspeed']}")
        if o["resume_from_checkpoint"] and not self.overwrite:
            problems.append("resume_from_checkpoint=True continues a run in a target that already holds it: pass "
                            "overwrite=True too (the checkpoints in lazyllm_lora are kept, the merge is redone)")
        try:
            template_path = find_template(o["prompt_template_name"])
            fixed = min_prompt_tokens(load_template(template_path))
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            if o["cutoff_len"] <= fixed:
                problems.append(
                    f"cutoff_len={o['cutoff_len']} leaves no response tokens: the {o['prompt_template_name']!r} "
                    f"prompt alone is at least {fixed} tokens before any instruction; raise cutoff_len (default 1030)"
                )
        raise_problems(self.name, problems)
        return o

    def plan(self, data: DataArg = None, valset: DataArg = None) -> Plan:
        """Like Finetune.plan; `data` may also come from the `data_path` option (not both)."""
        given = self.options.get("data_path")
        if data is not None and given is not None:
            raise ConfigError(f"finetune.alpacalora: data given twice (data_path={given!r} and {data!r}); pass one")
        return super().plan(data if data is not None else given, valset)

    def eval_files(self, valset: DataArg) -> list[Path]:
        """LazyLLM's `trainer(trainset, valset)`: evaluation records from their own file(s) instead of a
        `val_set_size` split of the training data."""
        if valset is None:
            return []
        files = resolve_data(valset)
        check_records(files)
        return files

    def required_packages(self, plan: Plan) -> dict[str, str]:
        return {"deepspeed": "deepspeed=... (DeepSpeed)"} if plan.options.get("deepspeed") else {}

    def build(self, plan: Plan) -> None:
        o = plan.options
        world = plan.topology.world_size
        problems = []
        if o["batch_size"] % (o["micro_batch_size"] * world):
            problems.append(f"batch_size={o['batch_size']} is not a multiple of micro_batch_size x processes = "
                            f"{o['micro_batch_size']} x {world}: gradient accumulation would not reach it exactly")
        unmatched = [p for p in self.cp_files if not any(f.is_file() for f in plan.base_model.glob(p))]
        if unmatched:
            problems.append(f"cp_files {', '.join(map(repr, unmatched))} match no file in {plan.base_model} "
                            "(the merged model would lack them); fix the glob, or pass cp_files='' to copy nothing")
        if not self.model.has_tokenizer:
            problems.append(f"{plan.base_model} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
        if o.get("deepspeed") and plan.topology.device == "cpu":
            problems.append("deepspeed needs GPUs; this launcher runs on CPU: leave deepspeed unset")
        if o["resume_from_checkpoint"] and not any(p.is_dir() for p in plan.target.lora.glob("checkpoint-*")):
            problems.append(f"resume_from_checkpoint=True but {plan.target.lora} has no checkpoint-N folder")
        uneven = o["load_best_model_at_end"] and o["save_steps"] % o["eval_steps"]
        if plan.eval_data and not o["val_set_size"] and uneven:
            # validate_options checks this for a val_set_size split; here for evaluation data of its own
            problems.append(f"load_best_model_at_end=True needs save_steps ({o['save_steps']}) to be a multiple of "
                            f"eval_steps ({o['eval_steps']}) with evaluation data: change them or pass "
                            "load_best_model_at_end=False")  # fmt: skip
        raise_problems(self.name, problems)
        records = check_records(plan.data)
        if plan.eval_data:
            plan.notes.append(f"evaluation data: {', '.join(p.name for p in plan.eval_data)} (val_set_size is not "
                              "used: nothing is split off the training data)")
        elif o["val_set_size"] >= records:
            raise_problems(self.name, [f"val_set_size={o['val_set_size']} leaves no training data: the data has "
                                       f"{records} records; lower val_set_size (0 disables evaluation)"])
        plan.notes.append(f"{records} records; gradient accumulation "
                          f"{o['batch_size'] // (o['micro_batch_size'] * world)} over {world} process(es)")

        py, logs = self.python(), plan.run_dir / "logs"
        train = [
            py, script("alpacalora_train.py"), "--base-model", str(plan.base_model), "--data", *map(str, plan.data),
            "--output-dir", str(plan.target.lora), "--prompt-template", str(self.template_path),
            "--run-name", self.model_name, "--lora-target-modules", ",".join(o["lora_target_modules"]),
        ]  # fmt: skip
        for key in ("batch_size", "micro_batch_size", "num_epochs", "learning_rate", "cutoff_len", "filter_nums",
                    "val_set_size", "lora_r", "lora_alpha", "lora_dropout", "train_on_inputs", "show_prompt",
                    "resume_from_checkpoint", "warmup_steps", "lr_scheduler_type", "load_best_model_at_end",
                    "logging_steps", "save_steps", "eval_steps", "save_total_limit", "seed"):  # fmt: skip
            train += [f"--{key.replace('_', '-')}", str(o[key]).lower() if isinstance(o[key], bool) else str(o[key])]
        if o.get("modules_to_save"):
            train += ["--modules-to-save", ",".join(o["modules_to_save"])]
        if o.get("trust_remote_code"):
            train += ["--trust-remote-code", "true"]
        if plan.eval_data:
            train += ["--val-data", *map(str, plan.eval_data)]
        if o.get("deepspeed"):
            train += ["--deepspeed", str(o["deepspeed"])]
        precision = gpu_precision(plan.topology, "finetune.alpacalora", required=False)
        if precision or plan.topology.device == "cpu":  # else the script decides from its GPU's compute capability
            train += ["--precision", precision or "fp32"]
        checkpointing = o.get("gradient_checkpointing")
        if checkpointing is None:
            checkpointing = plan.topology.device == "cuda"
        train += ["--gradient-checkpointing", str(checkpointing).lower()]
        merge = [py, script("merge_lora.py"), "--base", str(plan.base_model), "--adapter", str(plan.target.lora),
                 "--output", str(plan.target.merge)]  # fmt: skip
        merge += [f"--cp-files={p}" for p in self.cp_files] or ["--cp-files="]
        if o.get("trust_remote_code"):
            merge.append("--trust-remote-code")
        env = {"MASTER_PORT": str(o["nccl_port"])} if o.get("nccl_port") else {}
        plan.steps += [
            # DeepSpeed needs torchrun's distributed environment even for one process (else the Trainer tries MPI)
            Step("train", train, log=logs / "train.log", env=env, distributed=True, torchrun=bool(o.get("deepspeed"))),
            Step("merge", merge, log=logs / "merge.log"),
        ]
        plan.result = plan.target.merge

    def keeps_previous_lora(self, path: Path) -> bool:
        """A resumed run keeps lazyllm_lora (its checkpoints); the merge folder is always redone."""
        return bool(self.options["resume_from_checkpoint"]) and path == self.target.lora

    def check_outputs(self, plan: Plan) -> list[str]:
        lora, merge = plan.target.lora, plan.target.merge
        problems = [f"missing {lora / name}" for name in ("adapter_config.json", "adapter_model.safetensors")
                    if not (lora / name).is_file()]  # fmt: skip
        if not (merge / "config.json").is_file() or not any(merge.glob("*.safetensors")):
            problems.append(f"no merged model (config.json + *.safetensors) in {merge}")
        return problems

    def progress_log(self, plan: Plan) -> Path | None:
        return plan.target.lora / "trainer_log.jsonl"

    def metrics(self, plan: Plan) -> dict[str, Any]:
        out = super().metrics(plan)
        evals = [e["eval_loss"] for e in read_trainer_log(plan.target.lora / "trainer_log.jsonl") if "eval_loss" in e]
        out["final_eval_loss"] = evals[-1] if evals else None
        try:
            stats = json.loads((plan.target.lora / "train_data_stats.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return out
        keys = ("records", "train_samples", "val_samples", "dropped_over_filter_nums", "dropped_no_response_tokens",
                "cut_before_response", "input_tokens", "label_tokens")  # fmt: skip
        return {**out, **{k: stats.get(k) for k in keys}}
