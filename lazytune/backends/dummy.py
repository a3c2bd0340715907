"""finetune.dummy: the whole pipeline with harmless real processes and no ML dependency (CI's default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launchers import Step

from ..options import Option, OptionSpec
from ..plan import FileSpec, Plan
from .base import Finetune, script

DUMMY_OPTIONS = OptionSpec("dummy", [
    Option("num_train_epochs", int, 1, "epochs", aliases=("num_epochs",), minimum=1),
    Option("steps_per_epoch", int, 3, "fake optimizer steps per epoch", minimum=1),
    Option("learning_rate", float, 1e-4, "recorded only", minimum=0),
    Option("sleep", float, 0.0, "seconds per fake step (to exercise progress and cancel)", minimum=0),
    Option("fail", str, "none", "make a step fail on purpose (tests)", choices=("none", "train", "merge")),
    Option("cp_files", str, "tokeniz*", "files copied from the base folder into the merge folder"),
])  # fmt: skip

class DummyFinetune(Finetune):
    """Writes the same layout as the real backends (lazyllm_lora, lazyllm_merge, manifest) from real processes."""

    name = "dummy"
    env_name = "dummy"
    needs_data = False
    needs_model_config = False

    @classmethod
    def option_spec(cls) -> OptionSpec:
        return DUMMY_OPTIONS

    def python(self) -> str:
        import sys

        return sys.executable  # the dummy needs nothing but the standard library

    def build(self, plan: Plan) -> None:
        o: dict[str, Any] = plan.options
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
