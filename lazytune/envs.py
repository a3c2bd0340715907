"""One virtual environment per backend, because the backends pin versions that cannot live together.

CoLLiE imports only with transformers 4.40.2 + peft 0.10.0, LLaMA-Factory wants transformers <= 5.6 and no
torchvision, its PPO stage wants trl <= 0.9.6. `lazytune env install <name>` builds `<LAZYTUNE_HOME>/envs/<name>`
from the spec below; a backend's steps then run with `python_for(name)`:

1. `LAZYTUNE_<NAME>_PYTHON` (name upper-cased, `-` -> `_`), when set;
2. the managed environment's interpreter, when it is installed (its stamp file exists);
3. else the current interpreter (`sys.executable`).

Specs are plain data. An install is idempotent (skipped when the stamp holds the spec's hash), builds in a hidden
folder next to the final one and renames it into place at the end, so an interrupted install never looks installed.
Workarounds live inside the environment only (see `Standin`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from launchers.job import tail
from lazytune import config

#: The torch release every environment gets. Without a pin pip fetches the newest (multi-GB CUDA) build.
TORCH_VERSION = "2.13.0"
#: Placeholder in a spec's requirement lists, replaced by the torch requirement for the machine (`torch_requirement`).
TORCH = "{torch}"
#: Written last by a successful install; its presence is what "installed" means.
STAMP_NAME = "lazytune-env.json"
#: The pip output of the install that built the environment.
LOG_NAME = "lazytune-install.log"
#: Bumped when the install procedure itself changes in a way that needs existing environments rebuilt.
FORMAT_VERSION = 1


class EnvError(RuntimeError):
    """An environment could not be installed, found or checked."""


class UnknownEnvError(EnvError, ValueError):
    """A name that is not in `BACKENDS` (the message lists the close ones)."""


@dataclass(frozen=True)
class PipGroup:
    """One `pip install` call. `no_deps` installs the listed distributions without their declared dependencies."""

    requirements: tuple[str, ...]
    no_deps: bool = False


@dataclass(frozen=True)
class Standin:
    """A stand-in module written into the environment's site-packages (never anywhere else).

    `module` is the import name, `source` the text of its `__init__.py`, `why` the reason (shown by `env list -v`
    and written into the module's docstring).
    """

    module: str
    why: str
    source: str


@dataclass(frozen=True)
class EnvSpec:
    """What goes into one backend environment, in install order. Plain data: its hash decides rebuilds."""

    name: str
    description: str
    groups: tuple[PipGroup, ...]
    imports: tuple[str, ...]  # modules `check` imports, in order (the first is the backend itself)
    report: tuple[str, ...]  # distributions whose versions `check` reports
    forbidden: tuple[str, ...] = ()  # distributions removed after install (and reported if present)
    standins: tuple[Standin, ...] = ()
    check_commands: tuple[tuple[str, ...], ...] = ()  # argv run by `check`; "{bin}" is the env's bin folder
    environment: tuple[tuple[str, str], ...] = ()  # variables every step run with this env needs (`environment_for`)

    @property
    def python_variable(self) -> str:
        """The environment variable that overrides this backend's interpreter."""
        return python_variable(self.name)


_TORCHAUDIO_STANDIN = '''"""Stand-in `torchaudio` written by `lazytune env install llamafactory` (lazytune/envs.py).

LLaMA-Factory 0.9.5 imports torchaudio at the top of llamafactory/data/mm_plugin.py but uses it only for audio
inputs. The real torchaudio cannot be installed beside the CPU build of torch this environment uses, so this module
lets text-only training import; any use of it fails with the message below. It has no dist-info, so transformers'
`is_torchaudio_available()` stays False. Delete this folder after installing a real torchaudio.
"""

_MESSAGE = (
    "torchaudio.{} is not available: this environment has lazytune's torchaudio stand-in "
    "(audio inputs are not supported here; see lazytune/envs.py)"
)


def __getattr__(name):
    raise AttributeError(_MESSAGE.format(name))
'''

_LLAMAFACTORY_COMMON = (
    "transformers==5.6.0",
    "peft==0.18.1",
    "datasets==4.0.0",
    "accelerate==1.11.0",
    "omegaconf",
    "matplotlib",
    "pyyaml",
    "fire",
    "tyro<0.9",
    "sentencepiece",
    "tiktoken",
    "einops",
    "scipy",
    "pandas",
    "safetensors",
    "protobuf",
    "packaging",
    "pydantic",
)


def _llamafactory(
    name: str,
    pins: tuple[str, ...],
    description: str,
    imports: tuple[str, ...],
    environment: tuple[tuple[str, str], ...] = (),
) -> EnvSpec:
    return EnvSpec(
        name=name,
        description=description,
        groups=(
            PipGroup((TORCH,)),
            # Its declared deps pull torchvision/torchaudio/av/gradio: multi-GB, and they break torch 2.13 CPU.
            PipGroup(("llamafactory==0.9.5",), no_deps=True),
            PipGroup((*_LLAMAFACTORY_COMMON, *pins)),
        ),
        imports=("llamafactory", *imports),
        report=("llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate"),
        forbidden=("torchvision", "torchaudio"),
        standins=(
            Standin("torchaudio", "imported at module top by llamafactory/data/mm_plugin.py", _TORCHAUDIO_STANDIN),
        ),
        check_commands=(("{bin}/llamafactory-cli", "version"),),
        environment=environment,
    )


#: The environment specs, one per environment name (read-only).
BACKENDS: Mapping[str, EnvSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _llamafactory(
                "llamafactory",
                ("trl==0.24.0",),
                "LLaMA-Factory 0.9.5 (all stages but PPO)",
                ("llamafactory.train.tuner",),
            ),
            # LF 0.9.5's PPO trainer uses the trl <= 0.9.6 API, but LF checks trl>=0.18 at startup and its tuner module
            # imports the other stages (which need trl 0.24): run PPO via llamafactory.train.ppo.workflow with
            # DISABLE_VERSION_CHECK=1. trl 0.9.6 wants numpy<2, so pyarrow must predate its numpy>=2 requirement.
            _llamafactory(
                "llamafactory-ppo",
                ("trl==0.9.6", "pyarrow<22"),
                "LLaMA-Factory 0.9.5 with trl 0.9.6 for the PPO stage",
                ("llamafactory.train.ppo.workflow",),
                environment=(("DISABLE_VERSION_CHECK", "1"),),
            ),
            EnvSpec(
                name="alpacalora",
                description="lazytune's alpaca-lora trainer and the LoRA merge step (transformers + peft)",
                groups=(
                    PipGroup((TORCH,)),
                    PipGroup(
                        (
                            "transformers==5.6.0",
                            "peft==0.18.1",
                            "accelerate==1.11.0",
                            "datasets==4.0.0",
                            "safetensors",
                            "sentencepiece",
                            "protobuf",
                            "tokenizers",
                            "fire",
                        )
                    ),
                ),
                imports=("transformers", "peft", "accelerate", "datasets", "safetensors.torch"),
                report=("torch", "transformers", "peft", "accelerate", "datasets", "safetensors"),
            ),
            EnvSpec(
                name="flagembedding",
                description="FlagEmbedding 1.4.2 (embedder and reranker fine-tuning; not the [finetune] extra)",
                groups=(PipGroup((TORCH,)), PipGroup(("flagembedding==1.4.2", "transformers==5.23.0"))),
                imports=(
                    "FlagEmbedding",
                    "FlagEmbedding.finetune.embedder.encoder_only.base",
                    "FlagEmbedding.finetune.reranker.encoder_only.base",
                ),
                report=("flagembedding", "torch", "transformers", "sentence-transformers", "peft", "accelerate"),
            ),
            EnvSpec(
                name="collie",
                description="CoLLiE (collie-lm 1.0.7): transformers 4.40.2 + peft 0.10.0; trains on CUDA only",
                groups=(
                    PipGroup((TORCH,)),
                    PipGroup(("transformers==4.40.2", "peft==0.10.0", "collie-lm==1.0.7", "safetensors")),
                ),
                imports=("collie", "peft", "transformers"),
                report=("collie-lm", "torch", "transformers", "peft", "deepspeed", "megatron-core", "safetensors"),
            ),
        )
    }
)


def get_spec(name: str) -> EnvSpec:
    """The spec called `name`; an unknown name raises `UnknownEnvError` listing close matches."""
    try:
        return BACKENDS[name]
    except KeyError:
        close = difflib.get_close_matches(name, BACKENDS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnvError(f"unknown backend environment {name!r}.{hint} Known: {', '.join(BACKENDS)}") from None


def python_variable(name: str) -> str:
    """`LAZYTUNE_<NAME>_PYTHON` for `name` (upper-cased, `-` -> `_`)."""
    return f"LAZYTUNE_{name.upper().replace('-', '_')}_PYTHON"


def envs_root() -> Path:
    """`<LAZYTUNE_HOME>/envs` (read from the environment on every call)."""
    return config.settings().envs_dir


def env_dir(name: str) -> Path:
    """Where the managed environment `name` lives (whether or not it is installed)."""
    get_spec(name)
    return envs_root() / name


def env_python(path: Path) -> Path:
    """The interpreter of the virtual environment at `path`."""
    if os.name == "nt":  # pragma: no cover - lazytune targets Linux; kept so the path is right elsewhere
        return path / "Scripts" / "python.exe"
    return path / "bin" / "python"


def read_stamp(name: str) -> dict[str, Any] | None:
    """The stamp of the installed environment `name`, or None when it is not (completely) installed."""
    stamp = env_dir(name) / STAMP_NAME
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def python_for(name: str) -> str:
    """The interpreter `name`'s steps run with: `LAZYTUNE_<NAME>_PYTHON`, else the installed env's, else this one.

    A pure lookup (no subprocess). An installed environment whose spec has changed since is still used: `env list`
    marks it outdated and `env install` rebuilds it. A name without a spec (e.g. "dummy") has no managed environment:
    only its variable or this interpreter.
    """
    override = os.environ.get(python_variable(name))
    if override:
        return override
    if name in BACKENDS and read_stamp(name) is not None:
        python = env_python(env_dir(name))
        if python.exists():
            return str(python)
    return sys.executable


def environment_for(name: str) -> dict[str, str]:
    """Environment variables the backend's steps need when run with its environment (e.g. DISABLE_VERSION_CHECK)."""
    return dict(get_spec(name).environment)


def torch_requirement(cuda: bool) -> str:
    """The torch requirement for a machine with (`cuda=True`) or without a GPU.

    Both are `torch==TORCH_VERSION`; which build pip picks comes from its configuration: on machines without a GPU
    the CPU wheel (a local one here, or `LAZYTUNE_TORCH_INDEX_URL`, e.g. https://download.pytorch.org/whl/cpu), with a
    GPU PyPI's default Linux build, which is the CUDA one.
    """
    del cuda  # same pin; the source differs (see `_pip_env`)
    return f"torch=={TORCH_VERSION}"


def has_gpu() -> bool:
    """Whether nvidia-smi lists at least one GPU (no nvidia-smi: no GPU)."""
    from launchers.gpus import query_nvidia_smi

    try:
        return bool(query_nvidia_smi())
    except ValueError:  # output we could not parse: nvidia-smi ran, so assume a GPU
        return True


def spec_hash(spec: EnvSpec, variant: str) -> str:
    """Hash of what decides an environment's content: requirement groups, removals, stand-ins, torch, Python minor.

    Fields that only say how to check or run it (imports, report, check_commands, environment) are left out, so
    changing them never forces a rebuild.
    """
    payload = {
        "format": FORMAT_VERSION,
        "groups": [dataclasses.asdict(g) for g in spec.groups],
        "forbidden": list(spec.forbidden),
        "standins": [dataclasses.asdict(s) for s in spec.standins],
        "variant": variant,
        "torch": torch_requirement(variant == "cuda"),
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def status(name: str) -> dict[str, Any]:
    """Where `name` stands: `installed`, `outdated` (spec changed since), `missing`; plus path, python, override."""
    spec = get_spec(name)
    stamp = read_stamp(name)
    state = "missing"
    if stamp is not None:
        current = spec_hash(spec, stamp.get("variant", "cpu"))
        state = "installed" if stamp.get("spec_hash") == current else "outdated"
    return {
        "name": name,
        "state": state,
        "path": str(env_dir(name)),
        "python": python_for(name),
        "override": os.environ.get(spec.python_variable) or None,
        "stamp": stamp,
        "description": spec.description,
    }


def list_envs() -> list[dict[str, Any]]:
    """`status` of every known environment, in `BACKENDS` order."""
    return [status(name) for name in BACKENDS]


# --- install -------------------------------------------------------------------------------------------------------


def _pip_env(variant: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    index = os.environ.get("LAZYTUNE_TORCH_INDEX_URL")
    if index:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(filter(None, (env.get("PIP_EXTRA_INDEX_URL"), index)))
    return env


def _run_logged(argv: list[str], log_path: Path, env: dict[str, str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(argv))
    with open(log_path, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise EnvError(
            f"command failed (exit {proc.returncode}): {' '.join(argv)}\nfull log: {log_path}\n"
            f"--- last lines ---\n{tail(log_path)}"
        )


def check_torch_build(python: str, variant: str) -> str:
    """The torch build in `python` (e.g. "2.13.0+cpu"); `EnvError` when a CUDA build was asked for but pip chose a
    CPU one, so a GPU machine never ends up with a silently CPU-only environment. (A CUDA build on a machine without
    GPU works, only bigger: PyPI's default Linux wheel; LAZYTUNE_TORCH_INDEX_URL picks the CPU index.)"""
    code = "import torch; print(torch.__version__, torch.version.cuda or 'none')"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnvError(f"torch does not import in {python}: {proc.stderr[-2000:]}")
    version, cuda = proc.stdout.split()[-2:]
    if variant == "cuda" and cuda == "none":
        raise EnvError(
            f"asked for a {variant} build of torch but pip installed torch {version} (CUDA: {cuda}). pip's "
            "configuration decides the build (find-links, index): set LAZYTUNE_TORCH_INDEX_URL to the PyTorch index "
            "for the build you want (e.g. https://download.pytorch.org/whl/cu126 or .../whl/cpu), or pass --cpu/--cuda."
        )
    return version


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _relocate(root: Path, old: Path, new: Path) -> None:
    """Rewrite the build folder's path in the text files of bin/ (script shebangs, activate) and pyvenv.cfg."""
    old_b, new_b = str(old).encode(), str(new).encode()
    candidates = [root / "pyvenv.cfg"]
    for folder in (root / "bin", root / "Scripts"):
        if folder.is_dir():
            candidates += [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    for path in candidates:
        try:
            if path.stat().st_size > 1 << 20:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if old_b in data and b"\0" not in data[:1024]:
            path.write_bytes(data.replace(old_b, new_b))


def _size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, f)).st_size
    return total


@contextlib.contextmanager
def _lock(root: Path, name: str) -> Iterator[None]:
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvError(f"another `lazytune env install {name}` is running (lock {handle.name})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _build(spec: EnvSpec, build: Path, final: Path, variant: str, log: Callable[[str], None]) -> None:
    """Create the venv at `build` and install the spec into it (the caller renames it to `final`)."""
    log_path = build.parent / f".{spec.name}.building.log"
    log_path.write_text(f"lazytune env install {spec.name} ({variant})\n")
    env = _pip_env(variant)
    _run_logged([sys.executable, "-m", "venv", str(build)], log_path, env, log)
    python = env_python(build)
    torch = torch_requirement(variant == "cuda")
    constraints = build / "lazytune-constraints.txt"
    constraints.write_text(torch + "\n")  # later groups never move torch
    pip = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
    for group in spec.groups:
        reqs = [torch if r == TORCH else r for r in group.requirements]
        flags = ["--no-deps"] if group.no_deps else ["-c", str(constraints)]
        _run_logged([*pip, *flags, *reqs], log_path, env, log)
        if TORCH in group.requirements:
            check_torch_build(str(python), variant)
    for dist in spec.forbidden:
        probe = subprocess.run([str(python), "-m", "pip", "show", "-q", dist], capture_output=True, env=env)
        if probe.returncode == 0:
            _run_logged([str(python), "-m", "pip", "uninstall", "-y", dist], log_path, env, log)
    if spec.standins:
        site = _site_packages(python)
        for standin in spec.standins:
            folder = site / standin.module
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").write_text(standin.source)
            log(f"wrote stand-in module {standin.module!r} into {folder} ({standin.why})")
    shutil.move(str(log_path), str(build / LOG_NAME))


def install(name: str, *, force: bool = False, cuda: bool | None = None, log: Callable[[str], None] = print) -> Path:
    """Install (or rebuild) the environment `name`; returns its folder.

    Skipped when the stamp holds the current spec hash (unless `force`). `cuda=None` detects a GPU with nvidia-smi.
    The build happens in `<envs>/.<name>.building`, is renamed into place when complete, and the stamp is written
    last. A failed pip call raises `EnvError` with the tail of the pip log.
    """
    spec = get_spec(name)
    variant = "cuda" if (has_gpu() if cuda is None else cuda) else "cpu"
    digest = spec_hash(spec, variant)
    root = envs_root()
    final = root / name
    with _lock(root, name):
        stamp = read_stamp(name)
        if not force and stamp is not None and stamp.get("spec_hash") == digest:
            log(f"{name}: already installed at {final} (spec {digest})")
            return final
        build = root / f".{name}.building"
        _remove_tree(build)  # leftovers of an interrupted install
        log(f"{name}: building {variant} environment in {build}")
        started = time.monotonic()
        try:
            _build(spec, build, final, variant, log)
        except BaseException:
            _remove_tree(build)
            raise
        old = root / f".{name}.old"
        _remove_tree(old)
        if final.exists():
            final.rename(old)
        build.rename(final)
        _relocate(final, build, final)
        _remove_tree(old)
        seconds = round(time.monotonic() - started, 1)
        stamp_data = {
            "name": name,
            "spec_hash": digest,
            "variant": variant,
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}",
            "base_python": sys.executable,
            "install_seconds": seconds,
            "size_bytes": _size(final),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = final / (STAMP_NAME + ".tmp")
        tmp.write_text(json.dumps(stamp_data, indent=2) + "\n")
        tmp.replace(final / STAMP_NAME)
        log(f"{name}: installed in {seconds:.0f} s, {stamp_data['size_bytes'] / 1e9:.2f} GB at {final}")
        return final


def remove(name: str) -> bool:
    """Delete the managed environment `name`; False when there was none."""
    path = env_dir(name)
    if not path.exists():
        return False
    with _lock(envs_root(), name):
        (path / STAMP_NAME).unlink(missing_ok=True)  # not installed from here on, even if the delete is cut short
        _remove_tree(path)
    return True


# --- check ---------------------------------------------------------------------------------------------------------

_CHECK_CODE = r"""
import importlib, importlib.metadata, json, sys, time, traceback
modules, dists = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"python": sys.executable, "python_version": sys.version.split()[0], "imports": {}, "versions": {}}
for m in modules:
    t = time.monotonic()
    try:
        importlib.import_module(m)
        out["imports"][m] = {"ok": True, "seconds": round(time.monotonic() - t, 2)}
    except BaseException as e:
        err = f"{type(e).__name__}: {e}"
        out["imports"][m] = {"ok": False, "error": err, "traceback": traceback.format_exc()[-3000:]}
for d in dists:
    try:
        out["versions"][d] = importlib.metadata.version(d)
    except importlib.metadata.PackageNotFoundError:
        out["versions"][d] = None
print("LAZYTUNE_CHECK " + json.dumps(out))
"""


def check(name: str, *, timeout: float = 600) -> dict[str, Any]:
    """Import the backend with its interpreter (`python_for`) in a subprocess; report imports and versions.

    Returns `{"name", "python", "ok", "imports": {module: {"ok", ...}}, "versions": {dist: version|None},
    "commands": [{"argv", "returncode", "output"}], "forbidden_present": [...]}`.
    """
    spec = get_spec(name)
    python = python_for(name)
    dists = list(spec.report) + [d for d in spec.forbidden if d not in spec.report]
    argv = [python, "-c", _CHECK_CODE, json.dumps(list(spec.imports)), json.dumps(dists)]
    env = dict(os.environ, PYTHONNOUSERSITE="1", **dict(spec.environment))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"name": name, "python": python, "ok": False, "error": str(exc), "imports": {}, "versions": {}}
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("LAZYTUNE_CHECK ")), None)
    if line is None:
        return {
            "name": name, "python": python, "ok": False, "imports": {}, "versions": {},
            "error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}",
        }  # fmt: skip
    result = json.loads(line[len("LAZYTUNE_CHECK ") :])
    versions = result["versions"]
    forbidden_present = [d for d in spec.forbidden if versions.get(d)]
    for d in spec.forbidden:
        if d not in spec.report:
            versions.pop(d, None)
    commands = []
    bindir = str(Path(python).parent)
    for template in spec.check_commands:
        cmd = [part.replace("{bin}", bindir) for part in template]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
            commands.append({"argv": cmd, "returncode": run.returncode, "output": (run.stdout + run.stderr)[-2000:]})
        except (OSError, subprocess.TimeoutExpired) as exc:
            commands.append({"argv": cmd, "returncode": None, "output": str(exc)})
    ok = (
        all(i["ok"] for i in result["imports"].values())
        and not forbidden_present
        and all(c["returncode"] == 0 for c in commands)
    )
    return {
        "name": name,
        "python": python,
        "python_version": result["python_version"],
        "ok": ok,
        "imports": result["imports"],
        "versions": versions,
        "commands": commands,
        "forbidden_present": forbidden_present,
    }
