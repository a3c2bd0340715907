"""finetune.collie: LoRA fine-tuning with CoLLiE (collie-lm 1.0.7), then the same merge step as alpacalora.

    trainer = finetune.collie(base_model, target_path, launcher=launchers.local(ngpus=8))   # dp_size 8 by default
    merged = trainer("alpaca.json")

CoLLiE only trains on NVIDIA GPUs: it starts NCCL and calls `.cuda()` unconditionally (collie/utils/dist_utils.py,
collie/models/base.py). A plan whose launcher reports no GPU is refused with `CollieNeedsGpuError` before anything is
written; the plan of a launcher that reports GPUs (a GPU machine, `launchers.slurm(ngpus=...)`) can be built and
printed anywhere. dp_size x pp_size x tp_size must equal the job's world size (nodes x processes per node).

The steps run with the `collie` environment's Python (`lazytune env install collie`; it needs transformers 4.40.2
and peft 0.10.0, which clash with the other backends), or LAZYTUNE_COLLIE_PYTHON.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from launchers import Step

from ...errors import ConfigError, ModelNotFoundError
from ...options import Option, OptionSpec, raise_problems
from ...plan import FileSpec, Plan
from ..auto.gpu_table import gpu_precision
from ..base import DataArg, Finetune, script
from ..prompts import find_template, load_template

#: CoLLiE 1.0.7's model implementations (collie/models/<model_type>) and the LoRA defaults for each: the modules
#: named as in CoLLiE's (and the Hugging Face) model. internlm2's are LazyLLM's documented defaults.
MODEL_DEFAULTS: dict[str, dict[str, list[str]]] = {
    "llama": {"lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "modules_to_save": []},
    "internlm": {"lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "modules_to_save": []},
    "internlm2": {"lora_target_modules": ["wo", "wqkv"], "modules_to_save": ["tok_embeddings", "output"]},
    "moss": {"lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "modules_to_save": []},
    "moss_moon": {"lora_target_modules": ["qkv_proj", "out_proj"], "modules_to_save": []},
    "chatglm": {"lora_target_modules": ["query_key_value", "dense"], "modules_to_save": []},
    "chatglm2": {"lora_target_modules": ["query_layer", "key_layer", "value_layer", "dense"], "modules_to_save": []},
}
#: config.json keys of ChatGLM2 and later (ChatGLM-1 has inner_hidden_size / position_encoding_2d instead); those
#: models still say model_type "chatglm", which CoLLiE maps to its ChatGLM-1 implementation.
GLM2_KEYS = frozenset({"padded_vocab_size", "ffn_hidden_size", "multi_query_attention", "multi_query_group_num"})

COLLIE_OPTIONS = OptionSpec("collie", [
    Option("data_path", Path, None, "training data (used when the trainer is called without data)"),
    Option("batch_size", int, 64, "global batch size (micro_batch_size x dp_size x gradient accumulation)",
           minimum=1),
    Option("micro_batch_size", int, 4, "batch per GPU per step", minimum=1),
    Option("num_epochs", int, 3, "training epochs", aliases=("num_train_epochs",), minimum=1),
    Option("learning_rate", float, 5e-4, "AdamW learning rate", minimum=0),
    Option("dp_size", int, 8, "data parallel size; dp_size x pp_size x tp_size = world size", aliases=("ddp",),
           minimum=1),
    Option("pp_size", int, 1, "pipeline parallel size", minimum=1),
    Option("tp_size", int, 1, "tensor parallel size (CoLLiE: not compatible with LoRA, so 1)", aliases=("tp",),
           minimum=1),
    Option("lora_r", int, 8, "LoRA rank", minimum=1),
    Option("lora_alpha", int, 16, "LoRA alpha", minimum=1),
    Option("lora_dropout", float, 0.05, "LoRA dropout", minimum=0),
    Option("lora_target_modules", list, None, "modules that get LoRA (default: by model type, see MODEL_DEFAULTS)"),
    Option("modules_to_save", list, None, "modules trained and saved in full (default: by model type)"),
    Option("prompt_template_name", str, "alpaca", "prompt template: a name in lazytune/scripts/templates or a .json"),
    Option("trust_remote_code", bool, None, "load the model's own code (default: True when config.json has auto_map "
           "or the architecture needs it, e.g. internlm2, chatglm; False refuses such a model)"),
])  # fmt: skip


class CollieNeedsGpuError(ConfigError):
    """finetune.collie was asked to run where the launcher provides no GPU."""


def _list_arg(values: list[str]) -> str:
    return ",".join(values)


class CollieFinetune(Finetune):
    """LoRA fine-tuning with CoLLiE's Trainer (dp/pp parallel on NVIDIA GPUs), then a peft merge."""

    name = "collie"
    env_name = "collie"
    version_packages = ("collie-lm", "torch", "transformers", "peft", "deepspeed")

    def __init__(self, base_model: str | os.PathLike, target_path: str | os.PathLike,
                 merge_path: str | os.PathLike | None = None, model_name: str = "LLM", cp_files: str = "tokeniz*",
                 launcher: Any = None, **kw: Any):  # fmt: skip
        if not isinstance(model_name, str) or not re.fullmatch(r"[\w.+-]{1,100}", model_name):
            raise ConfigError(f"model_name must be a short name (letters, digits, . _ + -), got {model_name!r}")
        if not isinstance(cp_files, str):
            raise ConfigError(f"cp_files must be a glob string like 'tokeniz*', got {cp_files!r}")
        super().__init__(base_model, target_path, merge_path=merge_path, launcher=launcher, **kw)
        self.model_name = model_name
        self.cp_files = cp_files

    @property
    def model_type(self) -> str:
        return str(self.model.config.get("model_type", ""))

    @classmethod
    def option_spec(cls) -> OptionSpec:
        return COLLIE_OPTIONS

    def validate_options(self, kw: dict[str, Any]) -> dict[str, Any]:
        options = super().validate_options(kw)
        problems = []
        if options["tp_size"] > 1:
            problems.append(f"tp_size={options['tp_size']}: CoLLiE does not support tensor parallelism with LoRA "
                            "(use dp_size and pp_size)")  # fmt: skip
        per_step = options["micro_batch_size"] * options["dp_size"]
        if options["batch_size"] % per_step:
            problems.append(
                f"batch_size={options['batch_size']} must be a multiple of micro_batch_size x dp_size = "
                f"{options['micro_batch_size']} x {options['dp_size']} = {per_step} (gradient accumulation is "
                "batch_size / that)"
            )
        raise_problems(self.name, problems)
        load_template(find_template(options["prompt_template_name"]))
        defaults = MODEL_DEFAULTS[self._model_type()]  # LoRA modules by model type, unless given
        return {**options, **{k: list(v) for k, v in defaults.items() if options.get(k) is None}}

    def _model_type(self) -> str:
        if self.model.config_error:
            raise ModelNotFoundError(f"cannot read {self.model.config_path}: {self.model.config_error}")
        config = self.model.config
        model_type = str(config.get("model_type", ""))
        if model_type == "chatglm" and GLM2_KEYS & set(config):
            raise ConfigError(
                f"finetune.collie: {self.base_model} is ChatGLM2/ChatGLM3/GLM-4 (model_type 'chatglm' with the "
                f"ChatGLM2 architecture: {', '.join(sorted(GLM2_KEYS & set(config)))} in config.json); CoLLiE 1.0.7 "
                "would build its ChatGLM-1 model from it and crash while loading the weights. Use "
                "finetune.llamafactory (template chatglm3 / glm4) or finetune.alpacalora for this model."
            )
        if model_type not in MODEL_DEFAULTS:
            raise ConfigError(
                f"finetune.collie: CoLLiE 1.0.7 has no implementation of model_type {model_type!r} "
                f"({self.base_model}); it supports {', '.join(MODEL_DEFAULTS)}. Use finetune.llamafactory or "
                "finetune.alpacalora for other models."
            )
        return model_type

    def plan(self, data: DataArg = None, valset: DataArg = None) -> Plan:
        """As `Finetune.plan`; `data_path` is used when no data is passed. Refused when the launcher has no GPU."""
        if data is None and self.options.get("data_path"):
            data = self.options["data_path"]
        return super().plan(data, valset)

    def check_topology(self, plan: Plan) -> None:
        """CoLLiE needs one NVIDIA GPU per process, and dp x pp x tp processes in all."""
        topo, o = plan.topology, plan.options
        if topo.gpus_per_node == 0:
            raise CollieNeedsGpuError(
                "finetune.collie needs NVIDIA GPUs, and the launcher provides none "
                f"({topo.describe()}). CoLLiE 1.0.7 cannot train on CPU as shipped: it initialises NCCL and calls "
                ".cuda() unconditionally (collie/utils/dist_utils.py, collie/models/base.py). Run it with a launcher "
                "that has GPUs (launchers.local(ngpus=N) on a GPU machine, launchers.slurm(ngpus=N)), or use "
                "finetune.alpacalora / finetune.llamafactory, which train on CPU."
            )
        want = o["dp_size"] * o["pp_size"] * o["tp_size"]
        if want != topo.world_size:
            raise ConfigError(
                f"finetune.collie: dp_size x pp_size x tp_size = {o['dp_size']} x {o['pp_size']} x {o['tp_size']} "
                f"= {want}, but the launcher runs {topo.world_size} process(es) ({topo.describe()}). They must be "
                f"equal: pass dp_size={topo.world_size // (o['pp_size'] * o['tp_size']) or 1} or a launcher "
                f"with {want} GPUs in all."
            )
        if topo.nproc_per_node > topo.gpus_per_node:
            raise ConfigError(
                f"finetune.collie: {topo.nproc_per_node} processes per node but {topo.gpus_per_node} GPU(s) per "
                "node; CoLLiE needs one GPU per process"
            )

    def render_config(self, plan: Plan) -> dict[str, Any]:
        """The JSON the training script reads: everything the run does, in one inspectable file."""
        o = plan.options
        accumulation = o["batch_size"] // (o["micro_batch_size"] * o["dp_size"])
        return {
            "model_name": self.model_name,
            "base_model": str(plan.base_model),
            "model_type": self.model_type,
            "data_files": [str(p) for p in plan.data],
            "output_dir": str(plan.target.lora),
            "trainer_log": str(plan.target.lora / "trainer_log.jsonl"),
            "prompt_template": load_template(find_template(o["prompt_template_name"])),
            "learning_rate": o["learning_rate"],
            "trust_remote_code": bool(o.get("trust_remote_code")),
            "collie": {  # CollieConfig fields
                "dp_size": o["dp_size"],
                "pp_size": o["pp_size"],
                "tp_size": o["tp_size"],
                "train_epochs": o["num_epochs"],
                "train_micro_batch_size": o["micro_batch_size"],
                "gradient_accumulation_steps": accumulation,
                "seed": 42,
            },
            "lora": {
                "r": o["lora_r"],
                "lora_alpha": o["lora_alpha"],
                "lora_dropout": o["lora_dropout"],
                "target_modules": list(o["lora_target_modules"]),
                "modules_to_save": list(o["modules_to_save"]) or None,
            },
            "world_size": plan.topology.world_size,
            # bf16 from compute capability 8.0 up (torch's is_bf16_supported() says yes on a T4: emulated, slow)
            "precision": gpu_precision(plan.topology, "finetune.collie", required=False),
        }

    def build(self, plan: Plan) -> None:
        self.check_topology(plan)
        py = self.python()
        config = plan.run_dir / "collie_config.json"
        plan.files.append(FileSpec(config, json.dumps(self.render_config(plan), indent=2) + "\n"))
        logs = plan.run_dir / "logs"
        train = [py, script("collie_train.py"), "--config", str(config)]
        merge = [
            py, script("merge_lora.py"), "--base", str(plan.base_model), "--adapter", str(plan.target.lora),
            "--output", str(plan.target.merge), "--cp-files", self.cp_files,
        ]  # fmt: skip
        if plan.options.get("trust_remote_code"):
            merge.append("--trust-remote-code")
        from ...envs import environment_for

        env = environment_for(self.env_name)
        plan.steps += [
            Step("train", train, log=logs / f"{self.model_name}_train.log", env=env, distributed=True),
            Step("merge", merge, log=logs / f"{self.model_name}_merge.log", env=env),
        ]
        plan.result = plan.target.merge
        plan.notes.append(f"CoLLiE {self.model_type} model, LoRA on {_list_arg(plan.options['lora_target_modules'])}")

    def progress_log(self, plan: Plan) -> Path:
        """collie_train.py's LLaMA-Factory style trainer_log.jsonl (written by rank 0)."""
        return plan.target.lora / "trainer_log.jsonl"
