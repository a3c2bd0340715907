"""What every backend shares: model/target/data checks, the plan skeleton, running it, the run manifest.

A backend subclasses `Finetune`, declares its `option_spec()` and fills the plan in `build(plan)`:
files to write and argv steps. It never starts a process itself.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from launchers import Launcher

from ..config import settings
from ..data import is_url, resolve_data
from ..errors import ConfigError, ModelNotFoundError, OptionsError, TargetExistsError
from ..launching import FACTORIES, as_launcher, make_launcher
from ..model import ModelFolder
from ..options import OptionSpec, raise_problems
from ..plan import Plan, Target
from ..progress import read_trainer_log, summarize
from ..remote_code import decide_trust_remote_code
from ..run import Run

DataArg = str | os.PathLike | Sequence[str | os.PathLike] | None
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

def script(name: str) -> str:
    """Absolute path of one of our standalone scripts (run by path with the backend's interpreter)."""
    path = SCRIPTS / name
    if not path.is_file():
        raise FileNotFoundError(f"lazytune script missing: {path}")
    return str(path)

def backend_python(env_name: str) -> str:
    """The interpreter a backend's steps run with (LAZYTUNE_<ENV>_PYTHON, its managed env, else this one)."""
    try:
        from ..envs import python_for
    except ImportError:  # environments module not installed in this build
        return sys.executable
    return python_for(env_name)

def resolve_model(base_model: str | os.PathLike, need_config: bool = True) -> Path:
    """The base model folder: a path, or a name found under LAZYTUNE_MODEL_PATH. Nothing is downloaded."""
    if not isinstance(base_model, (str, os.PathLike)) or not str(base_model):
        raise ModelNotFoundError(f"base_model must be a folder path, got {base_model!r}")
    path = Path(base_model).expanduser()
    searched = [path]
    if not path.exists() and not path.is_absolute():
        for root in settings().model_path:
            searched.append(root / path)
            if (root / path).exists():
                path = root / path
                break
    if not path.exists():
        where = ", ".join(str(p) for p in searched)
        raise ModelNotFoundError(
            f"base model not found: {base_model} (looked in: {where}). lazytune never downloads models: "
            "pass a local folder, or set LAZYTUNE_MODEL_PATH to folders that contain it."
        )
    if not path.is_dir():
        raise ModelNotFoundError(f"base model must be a folder, not a file: {path}")
    if need_config and not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
    return path.resolve()

def resolve_target(target_path: str | os.PathLike, merge_path: str | os.PathLike | None = None) -> Target:
    """LazyLLM layout: <target>/lazyllm_lora + <target>/lazyllm_merge; a target named lazyllm_lora uses its sibling."""
    if not isinstance(target_path, (str, os.PathLike)) or not str(target_path):
        raise ConfigError(f"target_path must be a folder path, got {target_path!r}")
    if is_url(target_path):  # train into a local folder named after the URL; the finished merge is uploaded
        from ..fetch import local_target

        local = resolve_target(local_target(str(target_path)), merge_path)
        return dataclasses.replace(local, url=str(target_path))
    target_path = str(target_path).removeprefix("file://")
    target = Path(target_path).expanduser()
    if not target.is_absolute():
        target = settings().train_target_root / target
    target = target.absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"target_path exists and is not a folder: {target}")
    owns_root = target.name != "lazyllm_lora"
    root, lora = (target, target / "lazyllm_lora") if owns_root else (target.parent, target)
    merge = Path(merge_path).expanduser().absolute() if merge_path else root / "lazyllm_merge"
    return Target(root=root, lora=lora, merge=merge, owns_root=owns_root)

def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())

def check_target(target: Target, overwrite: bool) -> None:
    """A target that already holds results is an error unless overwrite=True (nothing is lost by accident)."""
    if overwrite:
        return
    taken = [p for p in (target.lora, target.merge) if _non_empty(p)]
    if target.manifest.exists():
        taken.append(target.manifest)
    if target.owns_root and _non_empty(target.root) and not taken:
        taken.append(target.root)
    if taken:
        raise TargetExistsError(
            f"target is not empty: {', '.join(str(p) for p in taken)}; pass overwrite=True to replace it, "
            "or choose another target_path"
        )

def check_inputs_apart(target: Target, inputs: Sequence[Path]) -> None:
    """The lora and merge folders (written, and cleared with overwrite=True) must not be or hold a model or data."""
    for label, out in (("lora folder", target.lora), ("merge folder", target.merge)):
        out = out.resolve()
        for path in inputs:
            path = path.resolve()
            if path == out or out in path.parents:
                raise ConfigError(
                    f"the {label} {out} would hold {path}, an input of this run: lazytune writes into that folder "
                    "(and empties it with overwrite=True); choose another target_path / merge_path"
                )


def data_problems(data: DataArg) -> list[str]:
    """What is wrong with `data` as far as any backend can tell (paths, format, the first records), as messages.
    The backend's own record checks run later, in `plan()`."""
    from ..data import sniff

    try:
        files = resolve_data(data)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    for path in files:
        try:
            sniff(path)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def combine_problems(error: ConfigError, more: Sequence[str]) -> ConfigError:
    """`error` and the other problems found beside it as one error of the same class (the first problem decides
    what is raised); `problems` lists each one."""
    first = list(getattr(error, "problems", None) or [str(error)])
    problems = first + [p for p in more if p not in first]
    if len(problems) == len(first):
        return error
    lines = "\n".join(f"  - {p}" for p in problems)
    message = f"{len(problems)} problem(s), all found before anything started:\n{lines}"
    if isinstance(error, OptionsError):
        combined: ConfigError = type(error)(error.backend, problems)
    else:
        try:
            combined = type(error)(message)
        except TypeError:  # an error class with another signature (DataError(message, path, line))
            combined = ConfigError(message)
        combined.problems = problems  # type: ignore[attr-defined]
    return combined


def with_option_problems(error: ConfigError, spec: OptionSpec, kw: dict[str, Any]) -> ConfigError:
    """`error` (a bad model or target path) with the keyword problems found beside it (unknown keys, types; a
    `data_path` keyword's data), so that one message lists every problem at once."""
    more: list[str] = []
    try:
        spec.validate(kw)
    except OptionsError as exc:
        more += exc.problems
    except ConfigError as exc:  # a backend-level check of the keywords
        more.append(str(exc))
    if isinstance(kw.get("data_path"), (str, os.PathLike)):
        more += data_problems(kw["data_path"])
    return combine_problems(error, more)


def default_launcher() -> Launcher:
    """A new launcher from LAZYTUNE_DEFAULT_LAUNCHER (created per trainer, never at import)."""
    return make_launcher()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)

class Finetune(abc.ABC):
    """Base of every `finetune.<backend>`: `trainer.plan(data)` builds, `trainer(data)` runs and returns a path."""

    name: ClassVar[str] = ""
    env_name: ClassVar[str] = ""  # which managed environment's python runs the steps
    needs_data: ClassVar[bool] = True
    needs_model_config: ClassVar[bool] = True
    version_packages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, base_model: str | os.PathLike, target_path: str | os.PathLike,
                 merge_path: str | os.PathLike | None = None, launcher: Launcher | None = None,
                 overwrite: bool = False, **kw: Any):
        if isinstance(merge_path, Launcher) or merge_path in FACTORIES:
            if launcher is not None:
                raise ConfigError("a launcher was given twice (the third positional argument is merge_path)")
            merge_path, launcher = None, merge_path  # `finetune.x(base, target, launchers.local())`: unambiguous
        launcher = as_launcher(launcher)
        if not isinstance(overwrite, bool):
            raise ConfigError(f"overwrite must be True or False, got {overwrite!r}")
        self.overwrite = overwrite
        self._launcher = launcher
        self.given = frozenset(kw)  # the keywords the user passed (as opposed to defaults filled in)
        try:
            self.base_model = self.resolve_base(base_model)
            self.target = resolve_target(target_path, merge_path)
        except ConfigError as exc:  # report the keyword problems with it: one error lists everything
            raise with_option_problems(exc, self.option_spec(), kw) from None
        # config.json and the rest, read once for every check and plan (finetune.auto hands over the one it read)
        same = isinstance(base_model, ModelFolder) and base_model.path == self.base_model
        self.model = base_model if same else ModelFolder.read(self.base_model)
        try:
            options = self.validate_options(kw)
        except ConfigError as exc:
            data = kw.get("data_path")
            raise combine_problems(exc, data_problems(data) if isinstance(data, (str, os.PathLike)) else []) from None
        # plan notes decided here, once (e.g. trust_remote_code)
        self.options, self.notes = self.remote_code_options(options)

    # -- what a backend provides -----------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def option_spec(cls) -> OptionSpec:
        """The whitelist of keyword options."""

    def data_files(self, data: DataArg) -> list[Path]:
        """The local data files of `data` (LLaMA-Factory overrides this for datasets given by name)."""
        return resolve_data(data)

    def resolve_base(self, base_model: str | os.PathLike) -> Path:
        """The base model folder (an error when it is not there). The dummy backend overrides this."""
        return resolve_model(base_model, self.needs_model_config)

    def validate_options(self, kw: dict[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled in: everything a backend resolves from the keywords is in the
        returned dict (no attributes set here). Backends add cross-checks by overriding."""
        return self.option_spec().resolve(kw)

    def remote_code_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """(`options` with `trust_remote_code` decided from the model folder, plan notes saying so); see
        lazytune.remote_code. Set when the model ships its own code and the option was not given; False on such a
        model is refused here. Backends without the option get `options` unchanged."""
        if "trust_remote_code" not in self.option_spec():
            return options, []
        value, note, problem = decide_trust_remote_code(self.model, options.get("trust_remote_code"))
        raise_problems(self.name, [problem] if problem else [])
        if value is not None:
            options = {**options, "trust_remote_code": value}
        return options, [note] if note else []

    @abc.abstractmethod
    def build(self, plan: Plan) -> None:
        """Fill `plan.files`, `plan.steps` and `plan.result` (and notes). `plan.options` is read-only here: adapt
        a copy."""

    def check_outputs(self, plan: Plan) -> list[str]:
        """Problems with the outputs after a successful job (empty list: all there). Never just True."""
        return [f"missing {p}" for p in (plan.target.lora, plan.target.merge) if not _non_empty(p)]

    def metrics(self, plan: Plan) -> dict[str, Any]:
        """Numbers for the manifest, read from the run's own log (`progress_log`): steps, first and final loss.
        Backends with more to report extend this."""
        log = self.progress_log(plan)
        if log is None:
            return {}
        summary = summarize(read_trainer_log(log))
        return {"steps": summary["step"] or 0, "total_steps": summary["total_steps"],
                "first_loss": summary["first_loss"], "final_loss": summary["final_loss"]}

    def progress_log(self, plan: Plan) -> Path | None:
        """The backend's own JSON-lines training log (LLaMA-Factory's trainer_log.jsonl format: current_steps,
        total_steps, loss per line; or the HF Trainer's step/max_steps/loss). It feeds the progress bar, `lazytune
        jobs` and the loss curve PNG drawn beside it. None: this backend writes no such log."""
        return None

    # -- the pipeline --------------------------------------------------------------------------------------------
    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            self._launcher = default_launcher()
        return self._launcher

    def python(self) -> str:
        return backend_python(self.env_name or self.name)

    def plan(self, data: DataArg = None, valset: DataArg = None) -> Plan:
        """Check everything and return the Plan. Writes nothing, starts nothing. `valset`: evaluation data, for
        backends that evaluate on a file (LazyLLM's `trainer(trainset, valset)`)."""
        errors: list[ConfigError] = []  # data, target and launcher problems are reported together
        files: list[Path] = []
        eval_files: list[Path] = []
        try:
            files = self.data_files(data) if (self.needs_data or data is not None) else []
            eval_files = self.eval_files(valset)
            # before check_target's "pass overwrite=True"
            check_inputs_apart(self.target, [self.base_model, *files, *eval_files])
        except ConfigError as exc:
            errors.append(exc)
        try:
            check_target(self.target, self.overwrite)
        except ConfigError as exc:
            errors.append(exc)
        launcher_problems = self.launcher.problems()
        if launcher_problems:
            errors.append(ConfigError(f"{self.launcher!r}: " + "; ".join(launcher_problems)))
        if errors:
            raise combine_problems(errors[0], [str(e) for e in errors[1:]])
        run_id = new_run_id()
        plan = Plan(
            backend=self.name, run_id=run_id, target=self.target, run_dir=self.target.runs / run_id,
            base_model=self.base_model, data=files, options=dict(self.options), topology=self.launcher.topology(),
            result=self.target.merge,
        )  # fmt: skip
        plan.eval_data = eval_files
        plan.notes += self.notes
        self.build(plan)
        self.check_packages(plan)
        return plan

    def required_packages(self, plan: Plan) -> dict[str, str]:
        """Optional packages the plan needs in the backend's environment (`package -> why`), e.g. deepspeed for a
        ZeRO config. Backends with such options override this."""
        return {}

    def check_packages(self, plan: Plan) -> None:
        """A plan whose environment lacks a package it needs fails now, naming the command that adds it."""
        needed = self.required_packages(plan)
        if not needed:
            return
        from ..envs import missing_packages

        problems = missing_packages(self.env_name or self.name, needed)
        if problems:
            raise ConfigError("; ".join(problems))

    def prepare_target(self, plan: Plan) -> None:
        """With overwrite=True, clear the previous results this run will write (never anything else)."""
        if not self.overwrite:
            return
        for path in (plan.target.lora, plan.target.merge):
            if path.is_dir() and not self.keeps_previous_lora(path):
                shutil.rmtree(path)
        plan.target.manifest.unlink(missing_ok=True)

    def keeps_previous_lora(self, path: Path) -> bool:
        """True where a run resumes from checkpoints in `path` (backends with resume support override)."""
        return False

    def eval_files(self, valset: DataArg) -> list[Path]:
        """Files of the evaluation data. A backend without evaluation on a file refuses it (LazyLLM passed it on and
        ignored it, silently)."""
        if valset is None:
            return []
        raise ConfigError(f"finetune.{self.name} takes no evaluation data file (valset={valset!r}); pass only the "
                          "training data (LazyLLM accepted and ignored it)")

    def start(self, data: DataArg = None, plan: Plan | None = None, valset: DataArg = None) -> Run:
        """Write the plan's files and start it; returns at once with a `Run`."""
        plan = plan or self.plan(data, valset)
        self.prepare_target(plan)
        plan.write_files()
        return Run.start(self, plan)

    def __call__(self, data: DataArg = None, valset: DataArg = None) -> str | Run:
        """Train (and merge). Sync launcher: returns the result folder. Async launcher: returns the `Run`."""
        run = self.start(data, valset=valset)
        return run.wait() if self.launcher.sync else run

    def __repr__(self) -> str:
        return f"finetune.{self.name}({str(self.base_model)!r}, {str(self.target.root)!r}, **{self.options!r})"
