"""finetune.llamafactory: LLaMA-Factory training (`llamafactory-cli train`) then the LoRA merge (`... export`).

    merged = finetune.llamafactory("models/Qwen2.5-0.5B-Instruct", "runs/sft", num_train_epochs=2)("train.json")

Keywords are LLaMA-Factory's own keys (checked against keys.json, typos fail with did-you-mean) over our template
configs/llama_factory/sft.yaml; a `config_path` YAML replaces that template (it is the whole config), and it and
`export_config_path` are checked the same way. The run folder gets train.yaml, export.yaml and dataset_info.json:
`llamafactory-cli train <run>/train.yaml` by hand does the same. Before training, a `data` step runs LF's own loader
on that data and records how many records LF keeps (scripts/lf_data_check.py).

Several processes (GPUs, or `launchers.local(nproc=2)` on CPU with gloo): the train step is `python -m
llamafactory.launcher train.yaml`, the module LF's own FORCE_TORCHRUN path starts under torchrun, and the launcher
wraps it in torchrun (or srun + torchrun on SLURM). Same processes and the same adapter as `FORCE_TORCHRUN=1
NPROC_PER_NODE=2 llamafactory-cli train`, without LF re-splitting the command line on spaces.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from launchers import Launcher, Step, Topology

from ...data import resolve_data
from ...errors import ConfigError, DataError, OptionsError, OptionTypeError, UnknownOptionError
from ...model import ModelFolder
from ...options import OptionSpec, raise_problems
from ...plan import FileSpec, Plan
from ...registered_data import registered_dir, registered_files
from ...run import __version__
from ..auto.gpu_table import gpu_precision
from ..base import DataArg, Finetune, backend_python, script
from .dataset_info import DatasetEntry, dataset_info, lf_skips, media_dir
from .keys import (
    MANAGED,
    config_dir,
    export_keys,
    is_csv_key,
    lf_keys,
    load_yaml,
    managed_problems,
    option_spec,
)
from .templates import check_tokenizer, template_for

PRECISION_KEYS = ("fp16", "bf16", "pure_bf16")
DATA_REPORT = "data_report.json"  # written by the data step (scripts/lf_data_check.py): LF's own row accounting


def _environment(env_name: str) -> dict[str, str]:
    try:
        from ...envs import environment_for
    except ImportError:
        return {}
    return environment_for(env_name)


# What `llamafactory-cli train` sets when it starts torchrun itself (llamafactory/launcher.py, OPTIM_TORCH on by
# default); lazytune starts torchrun in its place, so it sets them too. GPU only: they tune the CUDA allocator / NCCL.
LF_TORCHRUN_ENV = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TORCH_NCCL_AVOID_RECORD_STREAMS": "1"}


def torchrun_environment(topology: Topology) -> dict[str, str]:
    """LF's own settings for its torchrun processes (see LF_TORCHRUN_ENV); none on CPU."""
    return dict(LF_TORCHRUN_ENV) if topology.device == "cuda" else {}


def _validate_all(spec: OptionSpec, sources: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
    """Validate several sources (config files, keywords); raise once, listing every problem of all of them."""
    problems: list[str] = []
    out = []
    unknown = False
    for values, source in sources:
        problems += managed_problems(values, source)
        try:
            out.append(spec.validate({k: v for k, v in values.items() if k not in MANAGED}, source))
        except OptionsError as exc:
            unknown = unknown or isinstance(exc, UnknownOptionError)
            problems += exc.problems
    if problems:
        raise (UnknownOptionError if unknown else OptionTypeError)(spec.backend, problems)
    return out


class LlamafactoryFinetune(Finetune):
    """LLaMA-Factory fine-tuning: stages pt/sft/rm/dpo/kto/orpo (ppo with reward_model), lora/freeze/full."""

    name = "llamafactory"
    env_name = "llamafactory"
    version_packages = ("llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate")

    def __init__(self, base_model: str | os.PathLike, target_path: str | os.PathLike,
                 merge_path: str | os.PathLike | None = None, config_path: str | os.PathLike | None = None,
                 export_config_path: str | os.PathLike | None = None, lora_r: int | None = None,
                 modules_to_save: str | list[str] | None = None, lora_target_modules: str | list[str] | None = None,
                 launcher: Launcher | None = None, overwrite: bool = False, **kw: Any):
        for key, value in (("lora_r", lora_r), ("modules_to_save", modules_to_save),
                           ("lora_target_modules", lora_target_modules)):  # fmt: skip
            if value is not None:
                kw[key] = value
        self.config_path = Path(config_path).expanduser() if config_path else None
        self.export_config_path = Path(export_config_path).expanduser() if export_config_path else None
        self.merge_asked = merge_path is not None or self.export_config_path is not None
        self.dataset_dir, self.dataset_names = self._lazyllm_dataset_dir(kw), []
        # with dataset_dir, `dataset` names the registered data used when the trainer is called without data
        self.default_dataset = kw.pop("dataset", None) if self.dataset_dir is not None else None
        if kw.get("do_train") is True:
            del kw["do_train"]  # LazyLLM configs say so; lazytune always trains (False stays an error)
        super().__init__(base_model, target_path, merge_path, launcher=launcher, overwrite=overwrite, **kw)

    @classmethod
    def option_spec(cls) -> OptionSpec:
        return option_spec()

    def _lazyllm_dataset_dir(self, kw: dict[str, Any]) -> Path | None:
        """The user's own dataset folder (keyword, else config_path's `dataset_dir`); None: data files as usual."""
        value = kw.pop("dataset_dir", None)
        if value is None and self.config_path and self.config_path.is_file():
            value = load_yaml(self.config_path, "config_path").get("dataset_dir")
            if isinstance(value, str) and value.startswith("REMOTE:"):
                return None  # LF's hub dataset_info (nothing is downloaded): the data files given replace it, noted
        return registered_dir(value)

    def data_files(self, data: Any) -> list[Path]:
        """With `dataset_dir`: the files of the datasets named in `data`, registered there."""
        if self.dataset_dir is None:
            return super().data_files(data)
        if data is None and self.default_dataset is not None:
            data = self.default_dataset
        self.dataset_names, files = registered_files(self.dataset_dir, data)
        return files

    @functools.cached_property
    def config_files(self) -> ConfigFiles:
        """config_path / export_config_path as read once (first needed by validate_options)."""
        return read_config_files(self.config_path, self.export_config_path)

    @property
    def ignored(self) -> list[tuple[Path, str]]:
        """(config file, key) pairs of the user's YAMLs that lazytune sets itself (noted in the plan)."""
        return self.config_files.ignored

    @property
    def predict_only(self) -> bool:
        """config_path with do_predict and no do_train: predictions, no training, no merge."""
        return self.config_files.predict_only

    @property
    def predict_adapter(self) -> str | None:
        return self.config_files.predict_adapter

    @functools.cached_property
    def export_options(self) -> dict[str, Any]:
        """lora_export.yaml, then export_config_path, checked against LF's export keys."""
        keys = lf_keys()
        allowed = export_keys(keys)
        export_spec = OptionSpec("llamafactory", [o for o in option_spec(keys) if o.name in allowed])
        sources = [(load_yaml(config_dir() / "lora_export.yaml", "template"), "lora_export.yaml")]
        if self.config_files.export is not None:
            sources.append((self.config_files.export, str(self.export_config_path)))
        out: dict[str, Any] = {}
        for values in _validate_all(export_spec, sources):
            out.update(values)
        return out

    def validate_options(self, kw: dict[str, Any]) -> dict[str, Any]:
        """sft.yaml (or config_path: the whole config), then keywords, each checked; the export YAMLs likewise."""
        keys = lf_keys()
        spec = option_spec(keys)
        if self.config_files.train is not None:  # the user's config is the whole config: no template values underneath
            sources = [(self.config_files.train, str(self.config_path))]
        else:
            sources = [(load_yaml(config_dir() / "sft.yaml", "template"), "sft.yaml")]
        sources.append((kw, ""))
        merged: dict[str, Any] = {}
        for values in _validate_all(spec, sources):
            merged.update(values)
        merged = {k: v for k, v in merged.items() if v is not None}
        for key in ("stage", "finetuning_type"):  # what LF itself uses when a config leaves them out
            merged.setdefault(key, keys["train"][key]["default"])

        problems = []
        if merged.get("stage") == "ppo" and not merged.get("reward_model"):
            problems.append("stage 'ppo' needs reward_model=<folder of a reward model or adapter>")
        if merged.get("quantization_bit") and merged.get("finetuning_type") not in ("lora", "oft"):
            problems.append("quantization_bit (QLoRA / QOFT) works with finetuning_type='lora' or 'oft' only")
        if self.export_options.get("export_quantization_bit") and merged.get("finetuning_type") in ("lora", "oft"):
            problems.append("export_quantization_bit: LLaMA-Factory refuses to quantize while merging an adapter "
                            "(\"Please merge adapters before quantizing the model\"); quantize the merged model in a "
                            "separate `llamafactory-cli export` run")  # fmt: skip
        raise_problems(self.name, problems)
        return merged

    # -- plan ------------------------------------------------------------------------------------------------------
    def eval_files(self, valset: DataArg) -> list[Path]:
        """LazyLLM's `trainer(trainset, valset)`: the files become LF's eval_dataset (checked like the data)."""
        if valset is None:
            return []
        if self.dataset_dir is not None:
            raise ConfigError("valset with dataset_dir: register the evaluation data in "
                              f"{self.dataset_dir / 'dataset_info.json'} and pass eval_dataset=<its name>")  # fmt: skip
        return resolve_data(valset)

    def build(self, plan: Plan) -> None:
        o = dict(plan.options)
        validate = o.pop("validate_data", None)
        if validate is not None:
            plan.notes.append("validate_data has no effect: every record of every data file is read when planning")
        strict = o.pop("strict_data", False)
        stage = o["stage"]
        if stage == "orpo":  # LF runs ORPO as the dpo stage with the orpo loss
            o["stage"], o["pref_loss"] = "dpo", "orpo"
        if self.config_path and not o.get("template"):  # the config is the whole config: LF picks the template
            plan.notes.append(f"{self.config_path}: no 'template': LLaMA-Factory uses the tokenizer's chat template "
                              "(else 'empty')")  # fmt: skip
        else:
            try:
                o["template"] = template_for(self.model, o.get("template"))
            except ConfigError:
                if stage != "pt" or o.get("template"):
                    raise
                o["template"] = "empty"  # pretraining on raw text uses no chat format
                plan.notes.append("template: 'empty' (stage pt on a model whose chat template is unknown)")
            check_tokenizer(self.model, o["template"], bool(o.get("resize_vocab")))
        self._precision(o, plan)
        if self.predict_only:
            self._build_predict(plan, o, strict)
            return
        eval_entries: list[DatasetEntry] = []
        if self.dataset_dir is None:
            entries, files = dataset_info([*plan.data, *plan.eval_data], stage, plan.run_dir, validate)
            entries, eval_entries = entries[: len(plan.data)], entries[len(plan.data) :]
            plan.files += files
            if eval_entries:
                if not o.get("eval_strategy") and "do_eval" not in o:
                    o["do_eval"] = True  # else LF loads the eval data and never evaluates
                plan.notes.append(f"eval_dataset: {', '.join(str(e.source) for e in eval_entries)} (evaluated "
                                  + ("per eval_strategy" if o.get("eval_strategy") else "after training; set "
                                     "eval_strategy='steps' and eval_steps to evaluate during it") + ")")  # fmt: skip
            media = media_dir([*entries, *eval_entries], o.get("media_dir"))
            if media is not None:
                o["media_dir"] = str(media)
                plan.notes.append(f"media_dir: {media} (image/video/audio paths of the data are relative to it)")
            self._skips([*entries, *eval_entries], plan, strict)
            datasets, dataset_dir = ",".join(e.name for e in entries), str(plan.run_dir)
        else:  # registered in the user's own dataset_info.json: LLaMA-Factory reads them from there
            entries = []  # tokenized_path keys on the registered files instead
            datasets, dataset_dir = ",".join(self.dataset_names), str(self.dataset_dir)
            plan.notes.append(f"data: {datasets} as registered in {self.dataset_dir / 'dataset_info.json'}")
        keys = lf_keys()["train"]
        train = {
            "model_name_or_path": str(plan.base_model),
            "do_train": True,
            **{k: _render(k, v, keys) for k, v in o.items() if not k.startswith("export_")},
            "dataset": datasets,
            **({"eval_dataset": ",".join(e.name for e in eval_entries)} if eval_entries else {}),
            "dataset_dir": dataset_dir,
            "output_dir": str(plan.target.lora),
        }
        if stage == "ppo":
            self._ppo_compat(train)
        if train.get("tokenized_path"):
            train["tokenized_path"] = _tokenized_path(train, entries, keys, plan)
            plan.notes.append(f"tokenized_path: {train['tokenized_path']} (a folder per data and tokenization "
                              "settings: LF reuses whatever tokenization it finds there)")  # fmt: skip
        train_yaml = plan.run_dir / "train.yaml"
        plan.files.append(FileSpec(train_yaml, _dump(train, f"llamafactory-cli train {train_yaml}")))
        python, logs, env = self.python(), plan.run_dir / "logs", _environment(self.env_name)
        if stage == "ppo":  # the PPO env (old trl) runs the PPO workflow directly: LF's tuner imports every stage
            ppo_env = "llamafactory-ppo"
            argv = [backend_python(ppo_env), script("lf_ppo.py"), str(train_yaml)]
            plan.steps.append(Step("train", argv, log=logs / "train.log", env=_environment(ppo_env), distributed=True))
        else:  # what `llamafactory-cli train` runs; under torchrun when the launcher starts several processes
            check = [python, script("lf_data_check.py"), str(train_yaml), str(plan.run_dir / DATA_REPORT)]
            plan.steps.append(Step("data", check + (["--strict"] if strict else []), log=logs / "data.log", env=env))
            argv = [python, "-m", "llamafactory.launcher", str(train_yaml)]
            # LF refuses DeepSpeed without torchrun ("Please use FORCE_TORCHRUN=1"), even for one process
            deepspeed = bool(train.get("deepspeed"))
            if deepspeed or plan.topology.world_size > 1:
                env = {**env, **torchrun_environment(plan.topology)}
            plan.steps.append(
                Step("train", argv, log=logs / "train.log", env=env, distributed=True, torchrun=deepspeed)
            )
        for path, name in self.ignored:
            if name == "dataset_dir" and self.dataset_dir is not None:
                continue  # used: the folder of the registered datasets
            plan.notes.append(f"{path}: {name!r} is replaced by lazytune's value")
        if self.config_path:
            given = {name for _path, name in self.ignored}
            for key in ("model_name_or_path", "dataset", "dataset_dir", "output_dir", "do_train", "media_dir",
                        "tokenized_path"):  # fmt: skip
                if key in train and key not in given and key != "do_train":
                    plan.notes.append(f"{self.config_path}: lazytune sets {key!r}: {train[key]}")

        quantized = _quantization_method(self.model)
        if o["finetuning_type"] in ("lora", "oft") and quantized:
            if self.merge_asked:
                raise ConfigError(
                    f"the base model is quantized ({quantized}, config.json quantization_config): LLaMA-Factory cannot "
                    "merge an adapter into it (\"Cannot merge adapters to a quantized model\"); leave out merge_path "
                    "and export_config_path: the adapter is the result"
                )  # fmt: skip
            plan.notes.append(f"base model quantized ({quantized}): no merge step, the adapter in {plan.target.lora} "
                              "is the result (LLaMA-Factory cannot merge into a quantized model)")  # fmt: skip
            plan.result = plan.target.lora
            return
        if o["finetuning_type"] in ("lora", "oft"):
            export = {
                "model_name_or_path": str(plan.base_model),
                "adapter_name_or_path": str(plan.target.lora),
                **({"template": o["template"]} if o.get("template") else {}),
                "finetuning_type": o["finetuning_type"],  # LF's export merges LoRA and OFT adapters alike
                **({"trust_remote_code": o["trust_remote_code"]} if "trust_remote_code" in o else {}),
                **({"stage": "rm"} if o["stage"] == "rm" else {}),  # export copies the reward model's value head
                **{k: _render(k, v, keys) for k, v in o.items() if k.startswith("export_")},
                **{k: _render(k, v, keys) for k, v in self.export_options.items()},
                "export_dir": str(plan.target.merge),
            }
            if o.get("quantization_bit"):
                plan.notes.append("QLoRA: the adapter is merged into the unquantized base model")
            export_yaml = plan.run_dir / "export.yaml"
            plan.files.append(FileSpec(export_yaml, _dump(export, f"llamafactory-cli export {export_yaml}")))
            argv = [python, "-m", "llamafactory.cli", "export", str(export_yaml)]
            plan.steps.append(Step("export", argv, log=logs / "export.log", env=env))
        else:  # full / freeze: the trained model itself is the result
            argv = [python, script("copy_model.py"), "--src", str(plan.target.lora), "--dst", str(plan.target.merge)]
            plan.steps.append(Step("copy", argv, log=logs / "copy.log"))
        plan.result = plan.target.merge

    def _build_predict(self, plan: Plan, o: dict[str, Any], strict: bool) -> None:
        """A predict-only config: LF predicts on the data files (its eval_dataset) with the config's adapter; the
        predictions land in <target>/predictions; no training, no merge."""
        entries, files = dataset_info(plan.data, o["stage"], plan.run_dir)
        plan.files += files
        media = media_dir(entries, o.get("media_dir"))
        if media is not None:
            o["media_dir"] = str(media)
        self._skips(entries, plan, strict)
        keys, out = lf_keys()["train"], plan.target.root / "predictions"
        cfg = {
            "model_name_or_path": str(plan.base_model),
            **({"adapter_name_or_path": self.predict_adapter} if self.predict_adapter else {}),
            **{k: _render(k, v, keys) for k, v in o.items() if not k.startswith("export_")},
            "eval_dataset": ",".join(e.name for e in entries),
            "dataset_dir": str(plan.run_dir),
            "output_dir": str(out),
        }
        path = plan.run_dir / "predict.yaml"
        plan.files.append(FileSpec(path, _dump(cfg, f"llamafactory-cli train {path}")))
        argv = [self.python(), "-m", "llamafactory.launcher", str(path)]
        plan.steps.append(Step("predict", argv, log=plan.run_dir / "logs" / "predict.log",
                               env=_environment(self.env_name), distributed=True))  # fmt: skip
        plan.notes.append(f"predict only: {', '.join(str(e.source) for e in entries)} -> {out} "
                          "(generated_predictions.jsonl); no training, no merge")  # fmt: skip
        plan.result = out

    @staticmethod
    def _skips(entries: list[DatasetEntry], plan: Plan, strict: bool) -> None:
        """Records LF's converter will skip are named in the plan (strict_data=True: refused)."""
        problems = []
        for e in entries:
            if e.scan is None:
                continue
            for reason, count, line in lf_skips(e.scan, e.kind, e.info):
                problems.append(f"{e.source}: LLaMA-Factory will skip {count} of {e.scan.records} record(s): {reason} "
                                f"(first at line {line})")  # fmt: skip
        if problems and strict:
            raise DataError("strict_data=True and some records would not be trained on:\n  " + "\n  ".join(problems))
        plan.notes += problems

    def required_packages(self, plan: Plan) -> dict[str, str]:
        o = plan.options
        needed = {}
        if o.get("quantization_bit"):
            needed["bitsandbytes"] = f"quantization_bit={o['quantization_bit']} (QLoRA)"
        if o.get("deepspeed"):
            needed["deepspeed"] = "deepspeed=... (DeepSpeed ZeRO)"
        if str(o.get("flash_attn") or "").lower() == "fa2":
            needed["flash-attn"] = "flash_attn='fa2' (FlashAttention-2)"
        if o.get("enable_liger_kernel"):
            needed["liger-kernel"] = "enable_liger_kernel=True"
        return needed

    @staticmethod
    def _ppo_compat(train: dict[str, Any]) -> None:
        """The PPO env may run transformers 4.x (LF 0.9.5's PPO trainer needs it), where warmup_steps must be an
        int: a fraction becomes warmup_ratio (same meaning, accepted by 4.x and 5.x)."""
        warmup = train.get("warmup_steps")
        if isinstance(warmup, float) and 0 < warmup < 1 and "warmup_ratio" not in train:
            train["warmup_ratio"] = train.pop("warmup_steps")

    def _precision(self, o: dict[str, Any], plan: Plan) -> None:
        """bf16 from compute capability 8.0 up, fp16 on older GPUs, fp32 on CPU; an explicit choice is kept."""
        topo = plan.topology
        chosen = [k for k in PRECISION_KEYS if o.get(k)]
        if topo.device == "cpu":
            if "fp16" in chosen:
                raise ConfigError("fp16=True needs a CUDA GPU, and this launcher runs on CPU; leave it unset")
            if o.get("quantization_bit"):
                raise ConfigError("quantization_bit (QLoRA, bitsandbytes) needs a CUDA GPU; this launcher runs on CPU")
            return
        if not chosen and not any(k in o for k in PRECISION_KEYS) and not self.config_path:
            precision = gpu_precision(topo, "finetune.llamafactory")
            o[precision] = True
            cap = f" (compute capability {topo.compute_capability})" if topo.compute_capability else ""
            plan.notes.append(f"precision: {precision} for {topo.gpu_name or 'GPU'}{cap}")

    # -- results ---------------------------------------------------------------------------------------------------
    def progress_log(self, plan: Plan) -> Path | None:
        return plan.target.lora / "trainer_log.jsonl"

    def check_outputs(self, plan: Plan) -> list[str]:
        if self.predict_only:
            out = plan.target.root / "predictions" / "generated_predictions.jsonl"
            return [] if out.is_file() else [f"no predictions ({out})"]
        problems = []
        lora, merge = plan.target.lora, plan.target.merge
        if plan.options["finetuning_type"] in ("lora", "oft") and not (lora / "adapter_config.json").is_file():
            problems.append(f"no adapter_config.json in {lora}")
        if plan.result == lora:  # no merge step (quantized base): the adapter is the result
            return problems
        if not (merge / "config.json").is_file():
            problems.append(f"no config.json in {merge}")
        if not any(merge.glob("*.safetensors")) and not any(merge.glob("*.bin")):
            problems.append(f"no weights (*.safetensors) in {merge}")
        return problems

    def metrics(self, plan: Plan) -> dict[str, Any]:
        """Final loss and steps from LF's trainer_log.jsonl (train_results.json when no step was logged)."""
        if self.predict_only:
            try:
                return json.loads((plan.target.root / "predictions" / "predict_results.json").read_text())
            except (OSError, ValueError):
                return {}
        out = super().metrics(plan)
        try:
            results = json.loads((plan.target.lora / "train_results.json").read_text())
        except (OSError, ValueError):
            results = {}
        out.update({k: results[k] for k in ("train_loss", "train_runtime", "epoch") if k in results})
        data = _data_report(plan)
        if data:
            out["data"] = data
        if out["final_loss"] is None and "train_loss" in results:
            out["final_loss"] = results["train_loss"]
        return out


def _data_report(plan: Plan) -> dict[str, Any] | None:
    """records_in per file and examples_trained, from the data step's report (None when it did not run)."""
    try:
        report = json.loads((plan.run_dir / DATA_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:  # absent with dataset_dir (the user's own dataset_info.json): the dataset names stand for the files
        info = json.loads((plan.run_dir / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if "error" in report:
        return {"error": report["error"]}
    sets = report.get("datasets", {})
    return {
        "records_in": {info.get(name, {}).get("file_name", name): d["records"] for name, d in sets.items()},
        "examples_trained": report.get("examples_trained"),
        "dropped": {name: d["drops"] for name, d in sets.items() if d.get("drops")},
    }


@dataclasses.dataclass(frozen=True)
class ConfigFiles:
    """The user's LF YAMLs as lazytune uses them: `train` / `export` without the keys lazytune manages (None: not
    given), those keys (`ignored`), and whether the train config only predicts (with which adapter)."""

    train: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    ignored: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    predict_only: bool = False
    predict_adapter: str | None = None


def read_config_files(config_path: Path | None, export_config_path: Path | None) -> ConfigFiles:
    """Read and check config_path / export_config_path (errors name the file)."""
    train, export, ignored, predict_only, adapter = None, None, [], False, None
    if config_path:
        user = load_yaml(config_path, "config_path")
        predict_only = _check_training_config(user, config_path)
        if predict_only:  # the adapter to predict with is the config's own; the data are the eval data
            given = user.pop("adapter_name_or_path", None)
            user.pop("eval_dataset", None)
            if given and not Path(str(given)).expanduser().is_dir():
                raise ConfigError(f"{config_path}: adapter_name_or_path {given!r} is not a folder")
            adapter = str(Path(str(given)).expanduser().resolve()) if given else None
        ignored += [(config_path, k) for k in user if k in MANAGED]
        train = {k: v for k, v in user.items() if k not in MANAGED}
    if export_config_path:
        user = load_yaml(export_config_path, "export_config_path")
        ignored += [(export_config_path, k) for k in user if k in MANAGED]
        export = {k: v for k, v in user.items() if k not in MANAGED}
    return ConfigFiles(train, export, ignored, predict_only, adapter)


def _check_training_config(user: dict[str, Any], path: Path) -> bool:
    """config_path must be a training or a predict-only config (True for predict-only): LF's export and inference
    configs are refused with what to do instead (they would otherwise be planned as a training run)."""
    if user.get("do_predict") and not user.get("do_train"):
        return True
    if user.get("do_train") or "stage" in user:
        return False
    if "export_dir" in user or any(k.startswith("export_") for k in user):
        raise ConfigError(f"{path}: an export (merge) config for `llamafactory-cli export`, not a training config; "
                          "pass it as export_config_path= (lazytune sets model, adapter and export_dir)")  # fmt: skip
    if "infer_backend" in user or "adapter_name_or_path" in user:
        raise ConfigError(f"{path}: an inference config for `llamafactory-cli chat` / `api` (no 'stage', no "
                          "'do_train'), not a training config; lazytune trains: give a config with stage/do_train")
    return False


def _quantization_method(model: ModelFolder) -> str | None:
    """The quant_method of a pre-quantized model (GPTQ, AWQ, AQLM, ... in config.json), else None."""
    quant = model.quantization
    return str(quant.get("quant_method") or "quantized") if quant else None


def _tokenized_path(train: dict[str, Any], entries: list[DatasetEntry], keys: dict[str, Any], plan: Plan) -> str:
    """`<tokenized_path>/<key>`: the key hashes what shapes LF's tokenized data (the data files' identity, their
    dataset entries, the tokenizer files, stage, template and every data/model argument), so a later run reuses a
    tokenization only when it would have made the same one."""
    shaping = {k: v for k, v in train.items()
               if k in ("stage", "template", "model_name_or_path", "media_dir")
               or keys.get(k, {}).get("group") in ("DataArguments", "ModelArguments")}  # fmt: skip
    shaping.pop("tokenized_path", None)
    shaping.pop("dataset_dir", None)  # the run folder: differs per run, its content is in the entries below
    ident = []
    for e in entries:
        st = e.source.stat()
        ident.append([str(e.source), st.st_size, st.st_mtime_ns, st.st_ino, e.info | {"file_name": ""}])
    if not entries:  # dataset_dir: the registered files and their dataset_info.json
        for path in [*plan.data, Path(str(train["dataset_dir"])) / "dataset_info.json"]:
            st = path.stat()
            ident.append([str(path), st.st_size, st.st_mtime_ns, st.st_ino])
    tokenizer = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in plan.base_model.glob("*token*"))
    blob = json.dumps([shaping, ident, tokenizer], sort_keys=True, default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return str(Path(str(train["tokenized_path"])).expanduser().resolve() / key)


def _render(key: str, value: Any, keys: dict[str, Any]) -> Any:
    """A value as LF wants it in YAML: comma-separated strings for keys LF splits on commas; 10 not 10.0."""
    if isinstance(value, list) and key in keys and is_csv_key(keys[key]):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)  # logging_steps: 10, not 10.0 (LF reads both)
    return value


def _dump(data: dict[str, Any], command: str) -> str:
    header = f"# written by lazytune {__version__}; the same run by hand: {command}\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
