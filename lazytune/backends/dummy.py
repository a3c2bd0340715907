"""finetune.dummy: the whole pipeline with harmless real processes and no ML dependency (CI's default).

Like LazyLLM's `finetune.dummy`, it is a stand-in that needs nothing: any base model name (a folder that does not
exist is fine), any keyword (recorded in the run's options and manifest; keywords it does not use are listed in a
warning and a plan note), and no data. It still runs real processes and writes the same layout and manifest as the
real backends. `strict=True` checks like a real backend: an existing model folder, only its own options.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from launchers import Launcher, Step

from ..data import resolve_data
from ..errors import ConfigError, ModelNotFoundError
from ..options import Option, OptionSpec
from ..plan import FileSpec, Plan
from .base import DataArg, Finetune, resolve_model, script


class DummyKeywordsWarning(UserWarning):
    """finetune.dummy was given keywords it does not use (recorded in the manifest all the same)."""


def _jsonable(value: Any) -> Any:
    """`value` if the manifest can hold it as JSON, else its repr (a LazyLLM Option, a launcher, ...)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _blank(data: DataArg) -> bool:
    if isinstance(data, str):
        return not data.strip()
    return isinstance(data, (list, tuple)) and all(isinstance(d, str) and not d.strip() for d in data)

def _unused_message(spec: OptionSpec, keys: Iterable[str]) -> str:
    """The warning (and plan note) about keywords the dummy records but does not use."""
    hints = []
    for key in keys:
        close = spec.suggestions(key)
        hints.append(f"{key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    return (f"finetune.dummy does not use {', '.join(hints)}: recorded in the run's options, not used (strict=True "
            "refuses unknown keywords)")


DUMMY_OPTIONS = OptionSpec("dummy", [
    Option("num_train_epochs", int, 1, "epochs", aliases=("num_epochs",), minimum=1),
    Option("steps_per_epoch", int, 3, "fake optimizer steps per epoch", minimum=1),
    Option("learning_rate", float, 1e-4, "recorded only", minimum=0),
    Option("sleep", float, 0.0, "seconds per fake step (to exercise progress and cancel)", minimum=0),
    Option("fail", str, "none", "make a step fail on purpose (tests)", choices=("none", "train", "merge")),
    Option("cp_files", str, "tokeniz*", "files copied from the base folder into the merge folder"),
    Option("trust_remote_code", bool, None, "recorded (the dummy loads no model)"),
])  # fmt: skip

class DummyFinetune(Finetune):
    """Writes the same layout as the real backends (lazyllm_lora, lazyllm_merge, manifest) from real processes."""

    name = "dummy"
    env_name = "dummy"
    needs_data = False
    needs_model_config = False

    def __init__(self, base_model: str | os.PathLike = "base", target_path: str | os.PathLike = "target",
                 merge_path: str | os.PathLike | None = None, launcher: Launcher | None = None,
                 overwrite: bool = False, strict: bool = False, **kw: Any):
        if not isinstance(strict, bool):
            raise ConfigError(f"strict must be True or False, got {strict!r}")
        self.strict = strict
        super().__init__(base_model, target_path, merge_path, launcher=launcher, overwrite=overwrite, **kw)

    @classmethod
    def option_spec(cls) -> OptionSpec:
        return DUMMY_OPTIONS

    def resolve_base(self, base_model: str | os.PathLike) -> Path:
        """An existing folder is used (its config/tokenizer files are copied into the merge); any other name is
        kept as given, as LazyLLM's dummy does (strict=True: the folder must exist; the plan notes it)."""
        try:
            return resolve_model(base_model, need_config=False)
        except ModelNotFoundError:
            if self.strict or not isinstance(base_model, (str, os.PathLike)) or not str(base_model).strip():
                raise
        return Path(base_model).expanduser()

    def validate_options(self, kw: dict[str, Any]) -> dict[str, Any]:
        """Its own options, checked; unless strict, any other keyword too, kept as given (JSON-safe) and warned
        about once, here."""
        spec = self.option_spec()
        if self.strict:
            return spec.resolve(kw)
        extra = {k: _jsonable(v) for k, v in kw.items() if k not in spec}
        options = spec.resolve({k: v for k, v in kw.items() if k in spec})
        if extra:
            warnings.warn(_unused_message(spec, extra), DummyKeywordsWarning, stacklevel=3)
        return {**options, **extra}

    def eval_files(self, valset: DataArg) -> list[Path]:
        """LazyLLM's dummy takes a valset too: its files are checked and recorded (strict=True: refused)."""
        if self.strict or valset is None or _blank(valset):
            return super().eval_files(None if not self.strict and _blank(valset) else valset)
        return resolve_data(valset)

    def plan(self, data: DataArg = None, valset: DataArg = None) -> Plan:
        """As `Finetune.plan`; blank data ('' or [''], LazyLLM's `.trainset("")`) means no data for the dummy."""
        if not self.strict and _blank(data):
            data = None
        return super().plan(data, valset)

    def python(self) -> str:
        import sys

        return sys.executable  # the dummy needs nothing but the standard library

    def build(self, plan: Plan) -> None:
        o: dict[str, Any] = plan.options
        if not plan.base_model.is_dir():
            plan.notes.append(f"base model {str(plan.base_model)!r} is not a folder here: the dummy runs without it "
                              "(nothing is copied into the merge folder)")
        extra = [k for k in o if k not in self.option_spec()]
        if extra:
            plan.notes.append(_unused_message(self.option_spec(), extra))
        py = self.python()
        config = plan.run_dir / "dummy_config.json"
        plan.files.append(FileSpec(config, json.dumps(o, indent=2, sort_keys=True) + "\n"))
        logs = plan.run_dir / "logs"
        train = [
            py, script("dummy_train.py"), "--output", str(plan.target.lora),
            "--epochs", str(o["num_train_epochs"]), "--steps-per-epoch", str(o["steps_per_epoch"]),
            "--learning-rate", str(o["learning_rate"]), "--sleep", str(o["sleep"]),
        ]  # fmt: skip
        if plan.data:
            train += ["--data", *map(str, plan.data)]
        if o["fail"] == "train":
            train.append("--fail")
        merge = [
            py, script("dummy_merge.py"), "--base", str(plan.base_model), "--adapter", str(plan.target.lora),
            "--output", str(plan.target.merge), "--cp-files", o["cp_files"],
        ]  # fmt: skip
        if o["fail"] == "merge":
            merge.append("--fail")
        plan.steps += [
            Step("train", train, log=logs / "train.log"),
            Step("merge", merge, log=logs / "merge.log"),
        ]
        plan.result = plan.target.merge

    def progress_log(self, plan: Plan) -> Path:
        return plan.target.lora / "trainer_log.jsonl"
