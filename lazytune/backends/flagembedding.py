"""finetune.flagembedding: fine-tune embedding models and rerankers with the real FlagEmbedding package.

One distributed step, `python -m FlagEmbedding.finetune.{embedder|reranker}.encoder_only.base ...`, run with the
flagembedding environment's Python (under torchrun when the launcher runs several processes).

Output layout: FlagEmbedding writes a complete model (no LoRA, no merge step), into `<target>/lazyllm_merge` (or
`merge_path`), the folder the call returns; `<target>/lazytune_run.json` is the manifest, `<target>/lazytune_runs/`
holds each run's logs. (LazyLLM wrote to `<target>/embed` or `<target>/reranker`; lazytune keeps one layout for
every backend: the deployable model is always in lazyllm_merge.)
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

from launchers import Launcher, Step

from ..errors import ConfigError, OptionsError
from ..gpu_table import supports_bf16
from ..options import OptionSpec
from ..plan import FileSpec, Plan
from ..run import package_versions
from .base import Finetune
from .flagembedding_args import (
    BOTH_KINDS,
    DEEPSPEED_CONFIGS,
    DEEPSPEED_OFF,
    MODULES,
    OPTION_SPECS,
    check_lengths,
    detect_kind,
    flag_names,
    option_args,
    validate_kind_options,
)
from .flagembedding_data import check_data

WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "tokenizer.model")
# HF Trainer prints its logs as Python dict literals, often after a progress bar on the same line:
# {'loss': '1.2', 'grad_norm': '3.4', 'learning_rate': '0.001', 'epoch': '0.5'}
LOG_DICT = re.compile(r"\{'(?:loss|train_runtime)'[^{}]*\}")


def configs_dir() -> Path:
    """Our shipped configs: `configs/` of a source checkout, else the installed `lazytune.configs` package."""
    here = Path(__file__).resolve().parents[2] / "configs"
    if (here / "flagembedding").is_dir():
        return here
    import importlib.resources

    return Path(str(importlib.resources.files("lazytune.configs")))


class FlagembeddingFinetune(Finetune):
    """Embedder or reranker fine-tuning; `model_kind` ('embed' / 'rerank') is read from the model when not given.

    `trainer(data)` returns the fine-tuned model folder (loads with FlagEmbedding's FlagModel / FlagReranker and
    transformers). Data: .json / .jsonl records with `query`, `pos` [...], `neg` [...] (optional `pos_scores`,
    `neg_scores`, `prompt`, `type`), or a folder of such files.
    """

    name = "flagembedding"
    env_name = "flagembedding"
    version_packages = ("flagembedding", "torch", "transformers", "deepspeed")

    def __init__(self, base_model: str | os.PathLike, target_path: str | os.PathLike, launcher: Launcher | None = None,
                 *, merge_path: str | os.PathLike | None = None, overwrite: bool = False, **kw: Any):
        """LazyLLM's signature: `finetune.flagembedding(base_model, target_path, launcher=None, **kw)` (the third
        positional argument is the launcher; the model is written to `merge_path` or <target>/lazyllm_merge)."""
        if isinstance(launcher, (str, os.PathLike)):
            raise ConfigError(f"launcher must be a launchers.* object, got {str(launcher)!r} (the third positional "
                              "argument of finetune.flagembedding is the launcher, as in LazyLLM; pass merge_path= by "
                              "name for an output folder)")
        super().__init__(base_model, target_path, merge_path, launcher=launcher, overwrite=overwrite, **kw)

    @classmethod
    def option_spec(cls, kind: str | None = None) -> OptionSpec:
        """The whitelist of `kind` ('embed' or 'rerank': the lists differ); no kind: both, for listing and typing."""
        return OPTION_SPECS[kind] if kind else BOTH_KINDS

    def validate_options(self, kw: dict[str, Any]) -> dict[str, Any]:
        kw = dict(kw)
        self.model_kind = detect_kind(self.base_model, kw.pop("model_kind", None))
        spec = self.option_spec(self.model_kind)
        options = validate_kind_options(self.model_kind, kw, self.base_model)
        check_lengths(self.base_model, self.model_kind, options)
        self._given = {spec.canonical(k) for k in kw}  # what the user asked for, as opposed to our defaults
        return {"model_kind": self.model_kind, **options}

    # -- plan ------------------------------------------------------------------------------------------------------
    def build(self, plan: Plan) -> None:
        o = plan.options
        topo = plan.topology
        check_data(plan.data, o, topo.world_size)
        self._adapt_to_hardware(plan)
        py = self.python()
        versions = package_versions(py, self.version_packages)  # metadata only: a fraction of a second
        if not versions.get("flagembedding"):
            raise ConfigError(
                f"FlagEmbedding is not installed for {py}: run `lazytune env install flagembedding`, "
                "or set LAZYTUNE_FLAGEMBEDDING_PYTHON to a Python that has it"
            )
        dropped = [k for k, flag in flag_names(versions.get("transformers") or "").items() if flag is None]
        for key in sorted(self._given & set(dropped)):
            plan.notes.append(f"{key} is not an argument of transformers {versions['transformers']}: not passed")
        out = plan.result = plan.target.merge
        argv = [
            py, "-m", MODULES[self.model_kind],
            "--model_name_or_path", str(plan.base_model),
            "--train_data", *map(str, plan.data),
            "--output_dir", str(out),
            *option_args(o, self.model_kind, versions.get("transformers") or ""),
        ]  # fmt: skip
        deepspeed = self._deepspeed(plan, versions)
        if deepspeed:
            argv += ["--deepspeed", deepspeed]
        if topo.device == "cpu":
            # Without it, processes started by torchrun on a CPU-only host each train alone (no gloo group).
            argv += ["--use_cpu", "True"]
        plan.steps.append(
            Step("train", argv, log=plan.run_dir / "logs" / "train.log", cwd=plan.run_dir, distributed=True)
        )

    def _adapt_to_hardware(self, plan: Plan) -> None:
        """Drop defaults the hardware can't honour (with a note); asked-for impossibilities are errors."""
        o, topo, problems = plan.options, plan.topology, []
        if o.get("fp16") and topo.device == "cpu":
            if "fp16" in self._given:
                problems.append("fp16=True needs a GPU and this run is on CPU; pass fp16=False (or bf16=True)")
            o["fp16"] = None
            plan.notes.append("fp16 left off: no GPU (LazyLLM's default fp16=True applies on GPUs only)")
        if o.get("bf16") and topo.gpu_name and not supports_bf16(topo.gpu_name):
            problems.append(f"bf16=True but {topo.gpu_name} has no bf16 support; pass fp16=True instead")
        if o.get("fp16") and o.get("bf16"):
            problems.append("fp16=True and bf16=True: choose one")
        if self.model_kind == "embed" and o.get("negatives_cross_device") and topo.world_size < 2:
            if "negatives_cross_device" in self._given:
                problems.append("negatives_cross_device=True needs several processes (FlagEmbedding gathers "
                                "negatives across them); run with more than one process or pass False")  # fmt: skip
            o["negatives_cross_device"] = None
            plan.notes.append("negatives_cross_device left off: a single process has no other device")
        if problems:
            raise OptionsError(self.name, problems)

    def _deepspeed(self, plan: Plan, versions: dict[str, str | None]) -> str | None:
        """The DeepSpeed config to pass: ours (copied into the run folder) or the user's file; None for none."""
        choice = (plan.options.get("deepspeed") or "auto").strip()
        if choice.lower() in DEEPSPEED_OFF:
            return None
        if choice.lower() == "auto":
            if not (versions.get("deepspeed") and plan.topology.device == "cuda"):
                return None
            choice = "stage0"
        ours = choice.lower() in DEEPSPEED_CONFIGS
        path = configs_dir() / "flagembedding" / f"ds_{choice.lower()}.json" if ours else Path(choice).expanduser()
        if not path.is_file():
            raise OptionsError(self.name, [
                f"deepspeed={choice!r}: no such file (expected 'auto', 'stage0', 'stage1', 'none' or a JSON config)"
            ])  # fmt: skip
        if not versions.get("deepspeed"):
            raise OptionsError(self.name, [
                f"deepspeed={choice!r} but deepspeed is not installed for {self.python()}: install it in that "
                "environment, or pass deepspeed='none'"
            ])  # fmt: skip
        if ours:  # a copy in the run folder: the run records exactly what it used
            copy = plan.run_dir / path.name
            plan.files.append(FileSpec(copy, path.read_text(encoding="utf-8")))
            return str(copy)
        return str(path.resolve())

    # -- results ---------------------------------------------------------------------------------------------------
    def check_outputs(self, plan: Plan) -> list[str]:
        out = plan.target.merge
        if not out.is_dir():
            return [f"missing {out}"]
        names = {p.name for p in out.iterdir()}
        problems = []
        if "config.json" not in names:
            problems.append(f"no config.json in {out}")
        if not names & set(WEIGHTS) and not any(n.endswith(".safetensors") for n in names):
            problems.append(f"no model weights in {out}")
        if not names & set(TOKENIZER):
            problems.append(f"no tokenizer files in {out}")
        return problems

    def metrics(self, plan: Plan) -> dict[str, Any]:
        """Steps, final loss and train loss from HF Trainer's own log lines in the step log."""
        entries = []
        log = plan.steps[0].log if plan.steps else None
        if log is None or not log.is_file():
            return {}
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                for found in LOG_DICT.findall(line):
                    try:
                        entries.append(ast.literal_eval(found))
                    except (ValueError, SyntaxError):
                        continue
        steps = [e for e in entries if "loss" in e]
        summary = next((e for e in reversed(entries) if "train_runtime" in e), {})
        return {
            "logged_steps": len(steps),  # optimizer steps / logging_steps
            "first_loss": _number(steps[0]["loss"]) if steps else None,
            "final_loss": _number(steps[-1]["loss"]) if steps else None,
            "train_loss": _number(summary.get("train_loss")),
            "train_runtime": _number(summary.get("train_runtime")),
        }


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
