"""finetune.flagembedding: fine-tune embedding models and rerankers with the real FlagEmbedding package.

One distributed step, `python -m FlagEmbedding.finetune.{embedder|reranker}.encoder_only.base ...`, run with the
flagembedding environment's Python (under torchrun when the launcher runs several processes) through
scripts/flagembedding_train.py, which adds only a callback writing the run's trainer_log.jsonl (the progress bar).

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

from ...errors import ConfigError, OptionsError
from ...options import OptionSpec
from ...plan import FileSpec, Plan
from ...progress import read_trainer_log
from ...resources import configs_dir
from ...run import package_versions
from ..auto.gpu_table import bf16_by_name
from ..base import Finetune, script
from .args import (
    BOTH_KINDS,
    DEEPSPEED_CONFIGS,
    DEEPSPEED_OFF,
    FLAGEMBEDDING_DEFAULTS,
    MODULES,
    OPTION_SPECS,
    check_lengths,
    detect_kind,
    flag_names,
    option_args,
    validate_kind_options,
)
from .data import check_data

WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "tokenizer.model")
# HF Trainer prints its logs as Python dict literals, often after a progress bar on the same line:
# {'loss': '1.2', 'grad_norm': '3.4', 'learning_rate': '0.001', 'epoch': '0.5'}
LOG_DICT = re.compile(r"\{'(?:loss|train_runtime)'[^{}]*\}")


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
        kind = detect_kind(self.model, kw.pop("model_kind", None))
        options = validate_kind_options(kind, kw, self.base_model)
        check_lengths(self.model, kind, options)
        return {"model_kind": kind, **options}

    @property
    def model_kind(self) -> str:
        """'embed' or 'rerank' (the `model_kind` option, read from the model when not given)."""
        return self.options["model_kind"]

    @property
    def _given(self) -> set[str | None]:
        """The options the user asked for, as opposed to our defaults."""
        spec = self.option_spec(self.model_kind)
        return {spec.canonical(k) for k in self.given if k != "model_kind"}

    # -- plan ------------------------------------------------------------------------------------------------------
    def build(self, plan: Plan) -> None:
        topo = plan.topology
        records = check_data(plan.data, plan.options, topo.world_size)
        self._check_last_batch(plan, records)
        o = self._adapt_to_hardware(plan)  # plan.options stays as validated; argv gets what the hardware allows
        self._note_lazyllm_defaults(plan, o)
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
            py, script("flagembedding_train.py"), "--trainer-log", str(self.progress_log(plan)),
            "-m", MODULES[self.model_kind],
            "--model_name_or_path", str(plan.base_model),
            "--train_data", *map(str, plan.data),
            "--output_dir", str(out),
            *option_args(o, self.model_kind, versions.get("transformers") or ""),
        ]  # fmt: skip
        deepspeed = self._deepspeed(plan, versions)
        if deepspeed:
            argv += ["--deepspeed", deepspeed]
        elif o.get("gradient_checkpointing") and topo.world_size > 1:
            # DDP + reentrant checkpointing: "Expected to mark a variable ready only once" on transformers 4.x
            argv += ["--gradient_checkpointing_kwargs", '{"use_reentrant": false}']
            plan.notes.append("gradient_checkpointing_kwargs={'use_reentrant': False}: several processes without "
                              "DeepSpeed (reentrant checkpointing breaks DDP)")  # fmt: skip
        if topo.device == "cpu":
            # Without it, processes started by torchrun on a CPU-only host each train alone (no gloo group).
            argv += ["--use_cpu", "True"]
        # DeepSpeed needs torchrun's distributed environment even for one process (else the Trainer tries MPI)
        plan.steps.append(Step("train", argv, log=plan.run_dir / "logs" / "train.log", cwd=plan.run_dir,
                               distributed=True, torchrun=bool(deepspeed)))

    def _check_last_batch(self, plan: Plan, records: int) -> None:
        """A reranker's short last batch is reshaped into groups that mix queries: refuse unless none can occur."""
        o = plan.options
        if self.model_kind != "rerank" or o["dataloader_drop_last"]:
            return
        batch = o["per_device_train_batch_size"] * plan.topology.world_size
        validated = o.get("validate_data", True)
        if validated and records % batch == 0:
            return  # every batch is full
        counted = f"{records} records" if validated else "the record count is unknown (validate_data=False)"
        raise OptionsError(self.name, [
            f"dataloader_drop_last=False with a reranker: {counted}, not a multiple of {batch} "
            f"(per_device_train_batch_size x {plan.topology.world_size} process(es)), and FlagEmbedding reshapes a "
            "short last batch so that a negative is trained as the positive; keep dataloader_drop_last=True or "
            f"give a multiple of {batch} records"
        ])  # fmt: skip

    def _note_lazyllm_defaults(self, plan: Plan, o: dict[str, Any]) -> None:
        """Say which values (`o`: the options the run uses) come from LazyLLM's defaults where FlagEmbedding's own
        default differs."""
        spec = self.option_spec(self.model_kind)
        used = [f"{k}={o[k]!r} (FlagEmbedding: {v!r})" for k, v in FLAGEMBEDDING_DEFAULTS.items()
                if k in spec and k not in self._given and o.get(k) is not None and o[k] != v]  # fmt: skip
        if used:
            plan.notes.append("LazyLLM's defaults, not FlagEmbedding's, for options not given: " + ", ".join(used))

    def _adapt_to_hardware(self, plan: Plan) -> dict[str, Any]:
        """The options with defaults the hardware can't honour dropped (with a note); asked-for impossibilities are
        errors."""
        o, topo, problems = dict(plan.options), plan.topology, []
        if o.get("fp16") and topo.device == "cpu":
            if "fp16" in self._given:
                problems.append("fp16=True needs a GPU and this run is on CPU; pass fp16=False (or bf16=True)")
            o["fp16"] = None
            plan.notes.append("fp16 left off: no GPU (LazyLLM's default fp16=True applies on GPUs only)")
        if o.get("bf16") and topo.device == "cuda":
            cap = topo.compute_capability
            if (cap is not None and cap < 8.0) or (cap is None and bf16_by_name(topo.gpu_name) is False):
                where = f" (compute capability {cap})" if cap is not None else ""
                problems.append(f"bf16=True but {topo.gpu_name or 'the GPU'}{where} has no bf16 support; "
                                "pass fp16=True instead")
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
        return o

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

    def progress_log(self, plan: Plan) -> Path | None:
        return plan.run_dir / "trainer_log.jsonl"  # written by scripts/flagembedding_train.py's callback

    def metrics(self, plan: Plan) -> dict[str, Any]:
        """Steps and losses from the trainer log (as every backend), train loss and runtime from HF Trainer's own log
        lines in the step log; a warning when the loss never moved (a model FlagEmbedding cannot train this way,
        e.g. every text getting the same embedding)."""
        out = {**super().metrics(plan), **self._log_metrics(plan)}
        entries = read_trainer_log(self.progress_log(plan))
        losses = [e["loss"] for e in entries if isinstance(e.get("loss"), (int, float))]
        if len(losses) >= 3 and max(losses) - min(losses) <= 1e-6 * max(1.0, abs(losses[0])):
            out["warnings"] = [f"the loss never moved ({losses[0]:.6g} at all {len(losses)} logged steps): the model "
                               "did not learn; check that it is an encoder FlagEmbedding's encoder-only trainer "
                               "can train, the learning rate, and the data"]  # fmt: skip
        return out

    def _log_metrics(self, plan: Plan) -> dict[str, Any]:
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
