"""What `train` and `plan` share: their arguments, and turning them into a `finetune.<backend>(...)` call.

The CLI adds nothing to the Python API: `lazytune train B --base M --target T --data F k=v` is
`finetune.B(M, T, launcher=launchers.local(...), k=v)(F)`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

import launchers
from lazytune import finetune, launching
from lazytune.backends.base import Finetune, combine_problems, data_problems
from lazytune.config import settings
from lazytune.errors import ConfigError

TRAINERS = tuple(n for n in finetune.__all__ if n.islower())  # not LazyLLM's class-name aliases
LAUNCHERS = ("local", "slurm", "remote")
#: keys a config file may hold besides the backend's options (the other arguments of finetune.<backend>(...))
ARGUMENT_KEYS = ("base_model", "target_path", "merge_path", "overwrite", "data")

OPTIONS_HELP = """\
options are key=value pairs checked against the backend's whitelist (unknown keys are errors, with the closest
valid names); values are read as YAML scalars (2e-4, true, q_proj,v_proj, [a, b]), string options are kept verbatim.
-c config.yaml holds the same keys (and base_model, target_path, merge_path, overwrite, data); key=value wins.
`lazytune %(verb)s BACKEND --list-options` prints every option of a backend."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `train` and `plan`."""
    parser.add_argument("backend", choices=TRAINERS, metavar="BACKEND", help=f"one of: {', '.join(TRAINERS)}")
    parser.add_argument("options", nargs="*", metavar="key=value", help="backend options (see below)")
    parser.add_argument("--base", "--base-model", dest="base_model", metavar="MODEL",
                        help="base model folder (or a name under LAZYTUNE_MODEL_PATH); never downloaded")
    parser.add_argument("--target", "--target-path", dest="target_path", metavar="TARGET",
                        help="output folder: TARGET/lazyllm_lora, TARGET/lazyllm_merge, TARGET/lazytune_run.json; "
                             "relative to LAZYTUNE_TRAIN_TARGET_ROOT; a URL (s3://, memory://, ...) uploads the merge")
    parser.add_argument("--data", action="append", metavar="FILE",
                        help="training data: file, folder or URL (s3://, gs://, http(s)://, memory://, file://); "
                             "repeat for several")
    parser.add_argument("--merge-path", metavar="DIR", help="merged model folder (default TARGET/lazyllm_merge)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace the results already in TARGET (otherwise a non-empty target is an error)")
    parser.add_argument("-c", "--config", metavar="YAML", help="a YAML mapping of options (and the arguments above)")
    parser.add_argument("--launcher", choices=LAUNCHERS, help="where to run (default: LAZYTUNE_DEFAULT_LAUNCHER)")
    parser.add_argument("--ngpus", type=int, metavar="N", help="GPUs per node (local: the N with most free memory)")
    parser.add_argument("--nproc", type=int, metavar="N", help="processes per node for distributed steps")
    parser.add_argument("--nnodes", type=int, metavar="N", help="nodes (slurm/remote only)")
    parser.add_argument("--partition", metavar="NAME", help="SLURM partition (slurm/remote only)")
    parser.add_argument("--list-options", action="store_true", help="print the backend's options and exit")


def option_type(trainer_cls: type[Finetune], key: str) -> type | None:
    spec = trainer_cls.option_spec()
    name = spec.canonical(key)
    return spec.options[name].type if name else None


def parse_value(raw: str, kind: type | None) -> Any:
    """A command-line value: verbatim for string/path options, else a YAML scalar (so `no` is not False for str)."""
    if kind in (str, Path):
        return raw
    try:
        return yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        return raw


def parse_options(trainer_cls: type[Finetune], pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings → {key: value}. A pair without '=' is an error naming it."""
    out: dict[str, Any] = {}
    bad = [p for p in pairs if "=" not in p or p.startswith("=")]
    if bad:
        got = ", ".join(map(repr, bad))
        raise ConfigError(f"expected key=value, got {got} (paths go after --data, --base or --target)")
    for pair in pairs:
        key, raw = pair.split("=", 1)
        key = key.strip()
        out[key] = parse_value(raw, option_type(trainer_cls, key))
    return out


def load_config(path: str) -> dict[str, Any]:
    """A YAML mapping from `path`; syntax errors name the file and line."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {file}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{file}{where}: invalid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of key: value, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def canonical_keys(trainer_cls: type[Finetune], kw: dict[str, Any]) -> dict[str, Any]:
    """Aliases renamed to option names, so that `num_epochs=` on the command line overrides `num_train_epochs:`."""
    spec = trainer_cls.option_spec()
    return {(spec.canonical(k) or k): v for k, v in kw.items()}


def make_launcher(args: argparse.Namespace, stream: bool) -> launchers.Launcher:
    """The launcher the flags ask for: launchers.local / slurm / remote(...)."""
    name = args.launcher or settings().default_launcher
    kw: dict[str, Any] = {k: getattr(args, k) for k in ("ngpus", "nproc") if getattr(args, k) is not None}
    cluster = {k: getattr(args, k) for k in ("nnodes", "partition") if getattr(args, k) is not None}
    if name in ("local", "empty"):
        if cluster:
            raise ConfigError(f"--{' --'.join(cluster)}: only for --launcher slurm or remote")
        kw["stream"] = stream
    return launching.make_launcher(name, source=None if args.launcher else "LAZYTUNE_DEFAULT_LAUNCHER", **kw, **cluster)


def make_trainer(args: argparse.Namespace, stream: bool = False) -> tuple[Finetune, list[str] | None]:
    """`finetune.<backend>(...)` from the arguments, and the data to give it."""
    cls = getattr(finetune, args.backend)
    kw = canonical_keys(cls, load_config(args.config)) if args.config else {}
    kw.update(canonical_keys(cls, parse_options(cls, args.options)))
    for key in ARGUMENT_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            kw[key] = value
    data = kw.pop("data", None)
    if isinstance(data, (str, os.PathLike)):
        data = [str(data)]
    missing = [f"--{k.split('_')[0]}" for k in ("base_model", "target_path") if not kw.get(k)]
    if missing:
        raise ConfigError(f"missing {' and '.join(missing)} (or base_model/target_path in the -c config)")
    base, target = kw.pop("base_model"), kw.pop("target_path")
    if args.backend == "dummy":  # on the command line a typo is an error (the Python API is LazyLLM's lenient one)
        kw.setdefault("strict", True)
    flags = ("launcher", "ngpus", "nproc", "nnodes", "partition")
    # finetune.auto chooses the number of GPUs itself unless a launcher flag fixes it
    chosen_by_auto = args.backend == "auto" and all(getattr(args, f, None) is None for f in flags)
    try:
        trainer = cls(base, target, launcher=None if chosen_by_auto else make_launcher(args, stream), **kw)
    except ConfigError as exc:  # list the data's problems with it: one error names everything to fix
        raise combine_problems(exc, data_problems(data) if data else []) from None
    return trainer, data


def list_options(args: argparse.Namespace) -> int:
    cls = getattr(finetune, args.backend)
    print(f"options of finetune.{args.backend} (key=value on the command line, keyword arguments in Python):")
    print(cls.option_spec().describe())
    return 0
