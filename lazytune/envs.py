"""One virtual environment per backend, installed exactly from a committed lock.

CoLLiE imports only with transformers 4.40.2 + peft 0.10.0, LLaMA-Factory wants transformers <= 5.6 and no
torchvision, its PPO stage wants trl <= 0.9.6: the backends cannot share one environment. `lazytune env install
<name>` builds `<LAZYTUNE_HOME>/envs/<name>` from `configs/envs/<name>-<cpu|cuda>.txt`, a lock that names every
package of the environment (`name==version`, transitive ones included). Nothing is resolved at install time
(`--no-deps`), so the package index moving on can never change what is installed; `lazytune env lock <name>` makes a
new lock on purpose (fresh resolution, installed, checked and smoke-run before it is written).

A backend's steps run with `python_for(name)`:
1. `LAZYTUNE_<NAME>_PYTHON` (name upper-cased, `-` -> `_`), when set;
2. the managed environment's interpreter, when it is installed (its stamp file exists);
3. else the current interpreter (`sys.executable`).

An install builds in a hidden folder next to the final one, runs the imports and a tiny smoke run there, and only then
renames it into place and writes the stamp: an environment that does not work never looks installed. uv is used when
available (much faster), pip otherwise. Workarounds live inside the environment only (see `Standin`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from launchers.job import tail
from lazytune import config, resources

#: The torch release every environment gets (the CPU lock names its `+cpu` build, the CUDA lock PyPI's default one).
TORCH_VERSION = "2.13.0"
#: Placeholder in a spec's requirements, replaced by the variant's torch requirement when locking.
TORCH = "{torch}"
#: Written last by a successful install; its presence is what "installed" means.
STAMP_NAME = "lazytune-env.json"
#: The installer output of the install that built the environment.
LOG_NAME = "lazytune-install.log"
#: Bumped when the install procedure itself changes in a way that needs existing environments rebuilt.
FORMAT_VERSION = 2
#: Distributions a venv brings itself; never compared with a lock.
VENV_OWN = frozenset({"pip", "setuptools", "wheel"})
#: Marks the lines of an optional package group inside a lock (`#+ name==version` under `# --with NAME`).
OPTIONAL_PREFIX = "#+ "
#: Optional packages a plan may need, and what a plan uses them for.
OPTIONAL_PACKAGES: Mapping[str, str] = MappingProxyType(
    {
        "deepspeed": "DeepSpeed ZeRO (deepspeed=...)",
        "bitsandbytes": "4/8-bit quantized training (quantization_bit=...)",
        "liger-kernel": "Liger kernels (enable_liger_kernel=True)",
        "flash-attn": "FlashAttention-2 (flash_attn='fa2')",
    }
)
#: Optional packages that have no wheel to lock (built from source against the installed torch with nvcc).
SOURCE_ONLY = frozenset({"flash-attn"})

# Minimum Linux driver for each CUDA major version torch builds use (NVIDIA's CUDA compatibility table; CUDA 12.x
# builds run on any 12.x-capable driver through minor-version compatibility).
_CUDA13_DRIVER = (580, 65, 6)
_CUDA12_DRIVER = (525, 60, 13)
#: The PyTorch index of a CUDA 12 build of TORCH_VERSION, for drivers that cannot run PyPI's CUDA 13 build.
CUDA12_INDEX = "https://download.pytorch.org/whl/cu126"
CUDA12_TORCH = f"torch=={TORCH_VERSION}+cu126"
#: Distributions that belong to torch's CUDA build (replaced when a CUDA 12 build is installed instead).
_CUDA_RUNTIME = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


class EnvError(RuntimeError):
    """An environment could not be installed, found or checked."""


class UnknownEnvError(EnvError, ValueError):
    """A name that is not in `BACKENDS` (the message lists the close ones)."""


@dataclass(frozen=True)
class Standin:
    """A stand-in module written into the environment's site-packages (never anywhere else).

    `module` is the import name, `source` the text of its `__init__.py`, `why` the reason (written into the lock's
    header and shown by `env list`).
    """

    module: str
    why: str
    source: str


@dataclass(frozen=True)
class EnvSpec:
    """What one backend environment is. Plain data; its lock decides the installed packages.

    `requirements` are the top-level requirements `env lock` resolves ("{torch}" = the variant's torch);
    `unresolved` are added to the lock as they are, without their declared dependencies; `cuda_requirements` are
    resolved into the CUDA lock only; `optional` are the `--with` groups locked beside the environment.
    """

    name: str
    description: str
    requirements: tuple[str, ...]
    imports: tuple[str, ...]  # modules `check` imports, in order (the first is the backend itself)
    report: tuple[str, ...]  # distributions whose versions `check` reports
    smoke: str = "torch"  # what the smoke run exercises: none, torch, causal-lora, flagembedding (scripts/env_smoke.py)
    unresolved: tuple[str, ...] = ()
    cuda_requirements: tuple[str, ...] = ("bitsandbytes", "deepspeed")
    optional: tuple[str, ...] = ("deepspeed", "bitsandbytes", "liger-kernel")
    notes: tuple[str, ...] = ()  # why the odd pins are there (copied into the lock's header)
    forbidden: tuple[str, ...] = ()  # distributions that must not be in the environment (reported if present)
    standins: tuple[Standin, ...] = ()
    check_commands: tuple[tuple[str, ...], ...] = ()  # argv run by `check`; "{bin}" is the env's bin folder
    environment: tuple[tuple[str, str], ...] = ()  # variables every step run with this env needs (`environment_for`)
    locks: Path | None = None  # folder of this spec's lock files (None: the shipped configs/envs)

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
    TORCH,
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

_LLAMAFACTORY_NOTES = (
    "llamafactory==0.9.5 is installed without its declared dependencies: they pull torchvision/torchaudio/av/gradio "
    "(multi-GB; torchvision and torchaudio do not load beside this torch, and transformers then crashes training). "
    "The packages LF imports for training and export are listed instead.",
    "transformers 5.6.0 is the newest LF 0.9.5 accepts (its version check); tyro<0.9 for LF's CLI.",
)


def _llamafactory(
    name: str,
    pins: tuple[str, ...],
    description: str,
    imports: tuple[str, ...],
    notes: tuple[str, ...] = (),
    environment: tuple[tuple[str, str], ...] = (),
) -> EnvSpec:
    return EnvSpec(
        name=name,
        description=description,
        requirements=(*_LLAMAFACTORY_COMMON, *pins),
        unresolved=("llamafactory==0.9.5",),
        imports=("llamafactory", *imports),
        report=("llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate"),
        smoke="causal-lora",
        notes=(*_LLAMAFACTORY_NOTES, *notes),
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
                ("trl==0.24.0", "jieba", "nltk", "rouge-chinese"),
                "LLaMA-Factory 0.9.5 (all stages but PPO)",
                ("llamafactory.train.tuner",),
                notes=("jieba, nltk, rouge-chinese: LF's `metrics` extra, for do_predict with predict_with_generate.",),
            ),
            # LF 0.9.5's PPO trainer uses the trl <= 0.9.6 API, but LF checks trl>=0.18 at startup and its tuner module
            # imports the other stages (which need trl 0.24): run PPO via llamafactory.train.ppo.workflow with
            # DISABLE_VERSION_CHECK=1. trl 0.9.6 wants numpy<2, so pyarrow must predate its numpy>=2 requirement.
            _llamafactory(
                "llamafactory-ppo",
                ("trl==0.9.6", "pyarrow<22"),
                "LLaMA-Factory 0.9.5 with trl 0.9.6 for the PPO stage",
                ("llamafactory.train.ppo.workflow",),
                notes=(
                    "trl==0.9.6: LF 0.9.5's PPO trainer uses the trl <= 0.9.6 API (run with DISABLE_VERSION_CHECK=1).",
                    "pyarrow<22: trl 0.9.6 wants numpy<2, and newer pyarrow requires numpy>=2.",
                ),
                environment=(("DISABLE_VERSION_CHECK", "1"),),
            ),
            EnvSpec(
                name="alpacalora",
                description="lazytune's alpaca-lora trainer and the LoRA merge step (transformers + peft)",
                requirements=(
                    TORCH,
                    "transformers==5.6.0",
                    "peft==0.18.1",
                    "accelerate==1.11.0",
                    "datasets==4.0.0",
                    "safetensors",
                    "sentencepiece",
                    "protobuf",
                    "tokenizers",
                    "fire",
                ),
                imports=("transformers", "peft", "accelerate", "datasets", "safetensors.torch"),
                report=("torch", "transformers", "peft", "accelerate", "datasets", "safetensors"),
                smoke="causal-lora",
                notes=("transformers, peft, accelerate and datasets as in the llamafactory environment.",),
            ),
            EnvSpec(
                name="flagembedding",
                description="FlagEmbedding 1.4.2 (embedder and reranker fine-tuning; not the [finetune] extra)",
                requirements=(TORCH, "flagembedding==1.4.2", "transformers==5.23.0"),
                imports=(
                    "FlagEmbedding",
                    "FlagEmbedding.finetune.embedder.encoder_only.base",
                    "FlagEmbedding.finetune.reranker.encoder_only.base",
                ),
                report=("flagembedding", "torch", "transformers", "sentence-transformers", "peft", "accelerate"),
                smoke="flagembedding",
                notes=(
                    "transformers==5.23.0: FlagEmbedding 1.4.2 imports transformers.modeling_attn_mask_utils, which "
                    "5.24.0 removed; 5.23.0 trains bit-identically to 4.57.6.",
                    "Not flagembedding[finetune]: that extra builds flash-attn, which fails without CUDA.",
                ),
            ),
            EnvSpec(
                name="lazyllm",
                description="LazyLLM 1.4.0: the client whose TrainableModule drives lazytune (tests, benchmarks)",
                # + lazytune's own core dependencies: the client imports lazytune from the checkout
                requirements=("lazyllm==1.4.0", "pyyaml", "psutil", "tqdm", "msgspec"),
                imports=("lazyllm",),
                report=("lazyllm",),
                smoke="none",
                cuda_requirements=(),
                optional=(),
                notes=("no torch: LazyLLM only plans and starts the fine-tune, lazytune's environments train",),
            ),
            EnvSpec(
                name="collie",
                description="CoLLiE (collie-lm 1.0.7): transformers 4.40.2 + peft 0.10.0; trains on CUDA only",
                requirements=(TORCH, "transformers==4.40.2", "peft==0.10.0", "collie-lm==1.0.7", "safetensors"),
                imports=("collie", "peft", "transformers"),
                report=("collie-lm", "torch", "transformers", "peft", "deepspeed", "megatron-core", "safetensors"),
                smoke="causal-lora",
                notes=(
                    "transformers==4.40.2 and peft==0.10.0: collie-lm 1.0.7 imports only with these (its own pins are "
                    "broken against current releases).",
                ),
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

    A pure lookup (no subprocess). An installed environment whose lock has changed since is still used: `env list`
    marks it outdated and `env install` rebuilds it. A name without a spec (e.g. "dummy") has no managed environment:
    only its variable or this interpreter.
    """
    override = config.python_override(name)
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
    """The torch requirement of a variant's lock: PyPI's default (CUDA 13) build, or the `+cpu` build.

    The CPU build is not on PyPI: it comes from pip's find-links (a local wheel on some machines) or from
    `LAZYTUNE_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`.
    """
    return f"torch=={TORCH_VERSION}" if cuda else f"torch=={TORCH_VERSION}+cpu"


def has_gpu() -> bool:
    """Whether nvidia-smi lists at least one GPU (no nvidia-smi: no GPU)."""
    from launchers.gpus import query_nvidia_smi

    try:
        return bool(query_nvidia_smi())
    except ValueError:  # output we could not parse: nvidia-smi ran, so assume a GPU
        return True


# --- locks ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    """A parsed lock file: the pinned packages (`name -> version`, names normalized), in file order, and the
    optional `--with` groups (`group -> {name: version}`)."""

    path: Path
    pins: dict[str, str]
    optional: dict[str, dict[str, str]]
    text: str

    def lines(self, with_: Iterable[str] = ()) -> list[str]:
        """`name==version` requirement lines: the lock, plus the named optional groups."""
        lines = [f"{name}=={version}" for name, version in self.pins.items()]
        for group in with_:
            lines += [f"{name}=={version}" for name, version in self.optional[group].items()]
        return lines

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name (`Foo_bar` -> `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path(name: str, variant: str) -> Path:
    """`configs/envs/<name>-<variant>.txt` (or the spec's own `locks` folder)."""
    return _lock_file(get_spec(name), variant)


def _lock_file(spec: EnvSpec, variant: str) -> Path:
    folder = spec.locks if spec.locks is not None else resources.configs_dir() / "envs"
    return folder / f"{spec.name}-{variant}.txt"


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*$")


def parse_lock(path: Path) -> Lock:
    """Read a lock. Every requirement line must be `name==version`; anything else is an `EnvError` naming the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise EnvError(f"no lock file {path}: {exc.strerror}. Make one with `lazytune env lock`.") from None
    pins: dict[str, str] = {}
    optional: dict[str, dict[str, str]] = {}
    group: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("# --with "):
            group = line[len("# --with ") :].split()[0].rstrip(":")
            optional[group] = {}
            continue
        if line.startswith(OPTIONAL_PREFIX.strip()) and group is not None:
            body, target = line[len(OPTIONAL_PREFIX.strip()) :].strip(), optional[group]
        elif not line or line.startswith("#"):
            continue
        else:
            body, target = line, pins
        match = _PIN.match(body)
        if not match:
            raise EnvError(f"{path}:{number}: not a `name==version` line: {raw!r}")
        target[normalize(match.group(1))] = match.group(2)
    if not pins:
        raise EnvError(f"{path}: the lock pins no package")
    return Lock(path, pins, optional, text)


def read_lock(name: str, variant: str) -> Lock:
    """The lock of `name` for `variant` ("cpu" or "cuda")."""
    return parse_lock(lock_path(name, variant))


def spec_hash(spec: EnvSpec, variant: str, with_: Iterable[str] = ()) -> str:
    """Hash of what decides an environment's content: its lock, optional groups, removals, stand-ins, Python minor.

    Fields that only say how to check or run it (imports, report, check_commands, environment) are left out, so
    changing them never forces a rebuild. A missing lock hashes as such (the install then says what is missing).
    """
    try:
        lock_text = _lock_file(spec, variant).read_text()
    except OSError:
        lock_text = "(no lock)"
    payload = {
        "format": FORMAT_VERSION,
        "lock": hashlib.sha256(lock_text.encode()).hexdigest(),
        "with": sorted(with_),
        "forbidden": list(spec.forbidden),
        "standins": [dataclasses.asdict(s) for s in spec.standins],
        "variant": variant,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def status(name: str) -> dict[str, Any]:
    """Where `name` stands: `installed`, `outdated` (lock changed since), `missing`; plus path, python, override."""
    spec = get_spec(name)
    stamp = read_stamp(name)
    state = "missing"
    if stamp is not None:
        current = spec_hash(spec, stamp.get("variant", "cpu"), stamp.get("with", ()))
        state = "installed" if stamp.get("spec_hash") == current else "outdated"
    return {
        "name": name,
        "state": state,
        "path": str(env_dir(name)),
        "python": python_for(name),
        "override": config.python_override(name),
        "stamp": stamp,
        "description": spec.description,
    }


def list_envs() -> list[dict[str, Any]]:
    """`status` of every known environment, in `BACKENDS` order."""
    return [status(name) for name in BACKENDS]


# --- installers ----------------------------------------------------------------------------------------------------


def find_uv() -> str | None:
    """The uv binary lazytune installs with: from the `uv` package next to lazytune, else on PATH; None without."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin  # the PyPI package `uv` ships its binary

        return str(find_uv_bin())
    return shutil.which("uv")


def installer() -> str:
    """"uv" or "pip": `LAZYTUNE_INSTALLER` when set, else uv when it is available."""
    chosen = config.settings().installer
    if chosen == "pip":
        return "pip"
    if chosen == "uv" and find_uv() is None:
        raise EnvError("LAZYTUNE_INSTALLER=uv but uv is not installed (pip install uv)")
    return "uv" if find_uv() else "pip"


def _pip_config_sources() -> tuple[list[str], list[str]]:
    """pip's configured find-links and extra index URLs (env variables and pip.conf), so uv sees the same wheels."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    extra = os.environ.get("PIP_EXTRA_INDEX_URL", "").split()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        for line in out.splitlines():
            key, _, value = line.partition("=")
            value = value.strip().strip("'\"")
            if key.endswith(".find-links"):
                links += value.split()
            elif key.endswith(".extra-index-url"):
                extra += value.split()
    return list(dict.fromkeys(links)), list(dict.fromkeys(extra))


def _sources(*, variant: str = "cpu") -> list[str]:
    """Installer flags for where wheels come from: pip's own sources plus LAZYTUNE_TORCH_INDEX_URL.

    The CUDA variant leaves pip's find-links out: `torch==2.13.0` also matches a local `2.13.0+cpu` wheel there, and
    PEP 440 ranks that one higher.
    """
    links, extra = _pip_config_sources()
    if variant != "cpu":
        links = []
    index = config.settings().torch_index_url
    extra = [*extra, *([index] if index else [])]
    flags: list[str] = []
    for link in links:
        flags += ["--find-links", link]
    for url in dict.fromkeys(extra):
        flags += ["--extra-index-url", url]
    return flags


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1", UV_NO_PROGRESS="1")
    return env


def _run_logged(argv: list[str], log_path: Path, log: Callable[[str], None], hint: str = "") -> None:
    log("$ " + " ".join(argv))
    with open(log_path, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=_quiet_env(), check=False)
    if proc.returncode != 0:
        raise EnvError(
            f"command failed (exit {proc.returncode}): {' '.join(argv)}\n{hint}full log: {log_path}\n"
            f"--- last lines ---\n{tail(log_path)}"
        )


def _create_venv(tool: str, path: Path, log_path: Path, log: Callable[[str], None]) -> None:
    if tool == "uv":
        _run_logged([find_uv() or "uv", "venv", "--quiet", "--python", sys.executable, str(path)], log_path, log)
    else:
        _run_logged([sys.executable, "-m", "venv", str(path)], log_path, log)


def _install_exact(
    tool: str, python: Path, requirements: list[str], log_path: Path, log: Callable[[str], None],
    variant: str = "cpu", hint: str = "",
) -> None:  # fmt: skip
    """Install exactly `requirements` (pinned lines) into the venv of `python`: no dependency resolution."""
    req_file = log_path.parent / f".{log_path.stem}.requirements.txt"
    req_file.write_text("\n".join(requirements) + "\n")
    try:
        if tool == "uv":
            argv = [find_uv() or "uv", "pip", "install", "--python", str(python), "--no-deps", "--index-strategy",
                    "unsafe-best-match", *_sources(variant=variant), "-r", str(req_file)]  # fmt: skip
        else:
            argv = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-deps",
                    *_sources(variant=variant), "-r", str(req_file)]  # fmt: skip
        _run_logged(argv, log_path, log, hint)
    finally:
        req_file.unlink(missing_ok=True)


def check_torch_build(python: str, variant: str) -> str:
    """The torch build in `python` (e.g. "2.13.0+cpu"); `EnvError` when a CUDA build was asked for but a CPU one is
    there, so a GPU machine never ends up with a silently CPU-only environment."""
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


# --- CUDA builds ---------------------------------------------------------------------------------------------------


def driver_version() -> str | None:
    """The NVIDIA driver version nvidia-smi reports (first GPU), or None without nvidia-smi / GPU."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [x.strip() for x in proc.stdout.splitlines() if x.strip()]
    return lines[0] if proc.returncode == 0 and lines else None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


@dataclass(frozen=True)
class TorchBuild:
    """Which CUDA build of torch a driver runs: the lock's own (`index` None) or another index's."""

    cuda: str
    requirement: str
    index: str | None
    why: str


def torch_build_for_driver(driver: str | None, index_url: str | None = None) -> TorchBuild:
    """The torch build for an NVIDIA `driver` version: PyPI's CUDA 13.0 build from driver 580.65.06 on, a CUDA 12.6
    build (PyTorch's index, or `index_url`) from 525.60.13 on; older drivers get an `EnvError` saying what to do."""
    if driver is None:
        return TorchBuild("13.0", torch_requirement(True), None, "no driver version known (nvidia-smi did not answer)")
    version = _version_tuple(driver)
    if version >= _CUDA13_DRIVER:
        return TorchBuild("13.0", torch_requirement(True), None, f"driver {driver} runs CUDA 13.0 builds")
    if version >= _CUDA12_DRIVER:
        return TorchBuild(
            "12.6", CUDA12_TORCH, index_url or CUDA12_INDEX,
            f"driver {driver} is older than 580.65.06 (CUDA 13.0): installing the CUDA 12.6 build of torch",
        )  # fmt: skip
    raise EnvError(
        f"NVIDIA driver {driver} is too old for torch {TORCH_VERSION}: its CUDA builds need driver >= 525.60.13 "
        "(CUDA 12.6) or >= 580.65.06 (CUDA 13.0). Update the driver, or install the CPU build with "
        "`lazytune env install NAME --cpu`."
    )


_GPU_CHECK = (
    "import torch\n"
    "assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'\n"
    "x = torch.ones(64, 64, device='cuda')\n"
    "assert float((x @ x).sum()) == 64.0 ** 3, 'wrong matmul result'\n"
    "print('gpu ok', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))\n"
)


def verify_gpu(python: str) -> str:
    """Run `torch.cuda.is_available()` and a tiny matmul on the GPU with `python`; `EnvError` with the reason."""
    proc = subprocess.run([python, "-c", _GPU_CHECK], capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise EnvError(
            f"the CUDA build of torch in {python} cannot use the GPU (driver {driver_version() or 'unknown'}):\n"
            f"{(proc.stdout + proc.stderr)[-1500:]}\nCheck `nvidia-smi`, or set LAZYTUNE_TORCH_INDEX_URL to a PyTorch "
            "index whose CUDA version your driver runs, then `lazytune env install NAME --cuda --force`."
        )
    return proc.stdout.strip().splitlines()[-1]


# --- install -------------------------------------------------------------------------------------------------------


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


def _write_standins(spec: EnvSpec, python: Path, log: Callable[[str], None]) -> None:
    """Write the spec's stand-in modules into the site-packages of `python`'s environment (and nowhere else)."""
    if not spec.standins:
        return
    site = _site_packages(python)
    for standin in spec.standins:
        folder = site / standin.module
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").write_text(standin.source)
        log(f"wrote stand-in module {standin.module!r} into {folder} ({standin.why})")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _check_with(spec: EnvSpec, lock: Lock, with_: tuple[str, ...]) -> None:
    for group in with_:
        if group in SOURCE_ONLY:
            raise EnvError(
                f"{group} has no wheel to lock (it compiles against the installed torch with nvcc): install it into "
                f"the environment yourself: {python_variable(spec.name)}= ... or "
                f"`$(lazytune env path {spec.name} --python) -m pip install {group} --no-build-isolation`"
            )
        if group not in lock.optional and group not in lock.pins:
            known = sorted(set(lock.optional) | {g for g in spec.optional if g in lock.pins})
            close = difflib.get_close_matches(group, [*OPTIONAL_PACKAGES, *known], n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise EnvError(f"{lock.path.name} has no optional group {group!r}.{hint} Available: {', '.join(known)}")


def _populate(
    spec: EnvSpec, lock: Lock, build: Path, variant: str, with_: tuple[str, ...], tool: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Create the venv at `build`, install the lock into it, add stand-ins, run the checks and the smoke run."""
    log_path = build.parent / f".{spec.name}.building.log"
    log_path.write_text(f"lazytune env install {spec.name} ({variant}, {tool}, lock {lock.path})\n")
    _create_venv(tool, build, log_path, log)
    python = env_python(build)
    requirements = lock.lines(g for g in with_ if g in lock.optional)
    details: dict[str, Any] = {}
    if variant == "cuda":
        build_choice = torch_build_for_driver(driver_version(), config.settings().torch_index_url)
        log(f"{spec.name}: {build_choice.why}")
        details["torch_build"] = dataclasses.asdict(build_choice)
        if build_choice.index is not None:  # the CUDA 13 runtime packages of the lock are replaced by torch's own
            requirements = [r for r in requirements if not _CUDA_RUNTIME.match(r.split("==")[0])]
            requirements = [r for r in requirements if not r.startswith("torch==")]
    hint = (
        f"The lock {lock.path} names a version the package index (or LAZYTUNE_TORCH_INDEX_URL) does not have: "
        f"make a new lock with `lazytune env lock {spec.name}{' --cuda' if variant == 'cuda' else ''}`, or point "
        "LAZYTUNE_TORCH_INDEX_URL at an index that has it (torch's +cpu build: https://download.pytorch.org/whl/cpu).\n"
    )
    _install_exact(tool, python, requirements + list(spec.unresolved), log_path, log, variant, hint)
    if variant == "cuda" and details["torch_build"]["index"]:
        index = details["torch_build"]["index"]
        argv = ([find_uv() or "uv", "pip", "install", "--python", str(python)] if tool == "uv"
                else [str(python), "-m", "pip", "install", "--no-input"])  # fmt: skip
        _run_logged([*argv, "--index-url", index, details["torch_build"]["requirement"]], log_path, log)
    if "torch" in lock.pins:
        check_torch_build(str(python), variant)
    _write_standins(spec, python, log)
    smoke = _checked(spec, str(python), lock, with_, log_path)
    log(f"{spec.name}: smoke run passed ({smoke['seconds']} s): {smoke['output']}")
    details["smoke"] = smoke
    if variant == "cuda" and has_gpu():
        details["gpu"] = verify_gpu(str(python))
        log(f"{spec.name}: {details['gpu']}")
    shutil.move(str(log_path), str(build / LOG_NAME))
    return details


def install(
    name: str,
    *,
    force: bool = False,
    cuda: bool | None = None,
    with_: Iterable[str] = (),
    log: Callable[[str], None] = print,
) -> Path:
    """Install (or rebuild) the environment `name` exactly from its lock; returns its folder.

    Skipped when the stamp holds the current hash (unless `force`). `cuda=None` detects a GPU with nvidia-smi;
    `with_` adds optional groups of the lock (e.g. "deepspeed"). The build happens in `<envs>/.<name>.building`, must
    pass the imports and a smoke run, is renamed into place, and the stamp is written last. Any failure raises
    `EnvError` (with the installer's log tail) and leaves nothing that looks installed.
    """
    spec = get_spec(name)
    variant = "cuda" if (has_gpu() if cuda is None else cuda) else "cpu"
    with_ = tuple(sorted(set(with_)))
    lock = read_lock(name, variant)
    _check_with(spec, lock, with_)
    digest = spec_hash(spec, variant, with_)
    tool = installer()
    root = envs_root()
    final = root / name
    with _lock(root, name):
        stamp = read_stamp(name)
        if not force and stamp is not None and stamp.get("spec_hash") == digest:
            log(f"{name}: already installed at {final} (lock {lock.path.name}, {digest})")
            return final
        build = root / f".{name}.building"
        _remove_tree(build)  # leftovers of an interrupted install
        torch_pin = lock.pins.get("torch", "?")
        extras = f", with {', '.join(with_)}" if with_ else ""
        log(f"{name}: building the {variant} environment from {lock.path} (torch {torch_pin}, {len(lock.pins)} "
            f"packages{extras}) with {tool} in {build}")  # fmt: skip
        started = time.monotonic()
        try:
            details = _populate(spec, lock, build, variant, with_, tool, log)
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
            "with": list(with_),
            "lock": str(lock.path),
            "lock_digest": lock.digest,
            "installer": tool,
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}",
            "base_python": sys.executable,
            "install_seconds": seconds,
            "size_bytes": _size(final),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **details,
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
out = {"python": sys.executable, "python_version": sys.version.split()[0], "imports": {}, "versions": {},
       "installed": {}}
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
for dist in importlib.metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        out["installed"][name] = dist.version
if len(sys.argv) > 3 and all(i["ok"] for i in out["imports"].values()):
    import contextlib, io, runpy, tempfile
    script, kind = sys.argv[3], sys.argv[4]
    t, printed = time.monotonic(), io.StringIO()
    try:
        with tempfile.TemporaryDirectory(prefix="lazytune-smoke-") as work, contextlib.redirect_stdout(printed):
            code = runpy.run_path(script, run_name="env_smoke")["main"]([script, kind, work])
        out["smoke"] = {"ok": code == 0, "seconds": round(time.monotonic() - t, 1),
                        "output": (printed.getvalue().strip().splitlines() or [""])[-1]}
    except BaseException as e:
        out["smoke"] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
print("LAZYTUNE_CHECK " + json.dumps(out))
"""


def compare_with_lock(installed: Mapping[str, str], lock: Lock, with_: Iterable[str] = ()) -> dict[str, Any]:
    """How installed distributions differ from a lock (and its chosen optional groups).

    Returns `{"changed": [{"name", "locked", "installed"}], "missing": [...], "extra": [...]}`; pip/setuptools/wheel
    that a venv brings itself are never extra. Local version labels count (`2.13.0+cpu` differs from `2.13.0`).
    """
    expected = dict(lock.pins)
    for group in with_:
        expected.update(lock.optional.get(group, {}))
    have = {normalize(k): v for k, v in installed.items()}
    changed = [
        {"name": n, "locked": v, "installed": have[n]} for n, v in expected.items() if n in have and have[n] != v
    ]
    missing = sorted(n for n in expected if n not in have and n not in VENV_OWN)
    extra = sorted(n for n in have if n not in expected and n not in VENV_OWN)
    return {"changed": changed, "missing": missing, "extra": extra}


def _run_command(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    try:
        run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        return {"argv": argv, "returncode": run.returncode, "output": (run.stdout + run.stderr)[-2000:]}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"argv": argv, "returncode": None, "output": str(exc)}


def _check_python(
    spec: EnvSpec, python: str, *, lock: Lock | None, with_: Iterable[str] = (), timeout: float = 600,
    smoke: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Imports, versions, check commands and drift from `lock` for `python`; with `smoke`, the smoke run too, in the
    same process after the imports (it reuses what they loaded). The check commands run alongside."""
    dists = list(spec.report) + [d for d in spec.forbidden if d not in spec.report]
    # -I: neither the working folder nor PYTHONPATH may add packages (an editable checkout's *.egg-info, say)
    argv = [python, "-I", "-c", _CHECK_CODE, json.dumps(list(spec.imports)), json.dumps(dists)]
    if smoke:
        argv += [str(Path(__file__).resolve().parent / "scripts" / "env_smoke.py"), spec.smoke]
    env = dict(os.environ, PYTHONNOUSERSITE="1", **dict(spec.environment))
    if smoke:
        env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    bindir = str(Path(python).parent)
    templates = [[part.replace("{bin}", bindir) for part in t] for t in spec.check_commands]
    with concurrent.futures.ThreadPoolExecutor(max(1, len(templates))) as pool:
        pending = [pool.submit(_run_command, cmd, env, timeout) for cmd in templates]
        failed: dict[str, Any] | None = None
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed = {"name": spec.name, "python": python, "ok": False, "error": str(exc), "imports": {},
                      "versions": {}}  # fmt: skip
        commands = [f.result() for f in pending]
    if failed is not None:
        return failed
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("LAZYTUNE_CHECK ")), None)
    if line is None:
        return {
            "name": spec.name, "python": python, "ok": False, "imports": {}, "versions": {},
            "error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}",
        }  # fmt: skip
    result = json.loads(line[len("LAZYTUNE_CHECK ") :])
    versions = result["versions"]
    forbidden_present = [d for d in spec.forbidden if versions.get(d)]
    for d in spec.forbidden:
        if d not in spec.report:
            versions.pop(d, None)
    drift = compare_with_lock(result["installed"], lock, with_) if lock is not None else None
    ok = (
        all(i["ok"] for i in result["imports"].values())
        and not forbidden_present
        and all(c["returncode"] == 0 for c in commands)
        and (drift is None or not (drift["changed"] or drift["missing"]))
    )
    out = {
        "name": spec.name,
        "python": python,
        "python_version": result["python_version"],
        "ok": ok,
        "imports": result["imports"],
        "versions": versions,
        "commands": commands,
        "forbidden_present": forbidden_present,
        "lock": str(lock.path) if lock is not None else None,
        "drift": drift,
    }
    if "smoke" in result:
        out["smoke"] = result["smoke"]
    return out


def _checked(spec: EnvSpec, python: str, lock: Lock, with_: Iterable[str], log_path: Path) -> dict[str, Any]:
    """Check a new environment and smoke-run it; `EnvError` unless both pass. Returns the smoke result."""
    result = _check_python(spec, python, lock=lock, with_=with_, smoke=True)
    if not result["ok"]:
        raise EnvError(f"{spec.name}: the new environment does not work:\n{format_check(result)}\nfull log: {log_path}")
    smoke = result.get("smoke") or {"ok": False, "error": "the smoke run did not report"}
    if not smoke["ok"]:
        raise EnvError(f"{spec.name}: the smoke run failed: {smoke.get('error', '')}\n{smoke.get('traceback', '')}")
    return smoke


def check(name: str, *, timeout: float = 600) -> dict[str, Any]:
    """Import the backend with its interpreter (`python_for`) in a subprocess; report imports, versions and how the
    installed packages differ from the lock.

    Returns `{"name", "python", "ok", "imports": {module: {"ok", ...}}, "versions": {dist: version|None},
    "commands": [{"argv", "returncode", "output"}], "forbidden_present": [...], "lock", "drift"}`. A managed
    environment is compared with the lock it was installed from (a changed or missing package makes `ok` False; extra
    packages are only listed); an interpreter given by `LAZYTUNE_<NAME>_PYTHON` is the user's and is not compared.
    """
    spec = get_spec(name)
    python = python_for(name)
    stamp = read_stamp(name)
    lock = None
    if stamp is not None and not config.python_override(name):
        with contextlib.suppress(EnvError):
            lock = read_lock(name, stamp.get("variant", "cpu"))
    with_ = stamp.get("with", ()) if stamp else ()
    return _check_python(spec, python, lock=lock, with_=with_, timeout=timeout)


def format_check(result: Mapping[str, Any]) -> str:
    """The human-readable report of `check` (used by `lazytune env check` and install failures)."""
    mark = "ok" if result["ok"] else "FAILED"
    lines = [f"{result['name']}: {mark}  ({result['python']}, Python {result.get('python_version', '?')})"]
    for module, info in result.get("imports", {}).items():
        lines.append(f"  import {module}: " + (f"ok ({info['seconds']} s)" if info["ok"] else info["error"]))
    for dist, version in result.get("versions", {}).items():
        lines.append(f"  {dist}: {version or 'not installed'}")
    for cmd in result.get("commands", []):
        lines.append(f"  $ {' '.join(cmd['argv'])}: exit {cmd['returncode']}")
    for dist in result.get("forbidden_present", []):
        lines.append(f"  {dist} is installed but must not be (breaks this backend)")
    drift = result.get("drift")
    if drift:
        for row in drift["changed"]:
            lines.append(f"  differs from the lock: {row['name']} {row['installed']} (lock: {row['locked']})")
        for dist in drift["missing"]:
            lines.append(f"  missing (in the lock): {dist}")
        for dist in drift["extra"]:
            lines.append(f"  not in the lock (extra): {dist}")
        if not (drift["changed"] or drift["missing"] or drift["extra"]):
            lines.append(f"  equal to the lock {result.get('lock')}")
    elif result.get("lock") is None and "imports" in result:
        lines.append("  not compared with a lock (not a managed environment)")
    if result.get("error"):
        lines.append(f"  error: {result['error']}")
    return "\n".join(lines)


# --- optional packages a plan needs ----------------------------------------------------------------------------------


def installed_versions(name: str, dists: Iterable[str]) -> dict[str, str | None]:
    """Versions of `dists` in the interpreter `name`'s steps run with (package metadata only, nothing imported);
    `EnvError` when that interpreter cannot be asked."""
    from .run import read_package_versions

    python = python_for(name)
    try:
        return read_package_versions(python, tuple(sorted(dists)))
    except (OSError, subprocess.SubprocessError, ValueError):
        raise EnvError(f"could not read the packages of {python} (backend environment {name})") from None


def install_hint(name: str, package: str) -> str:
    """The exact command that adds the optional `package` to `name`'s environment."""
    python = python_for(name)
    if package in SOURCE_ONLY:
        return f"`{python} -m pip install {package} --no-build-isolation` (compiles with nvcc; GPU machines only)"
    if config.python_override(name):
        return f"`{python} -m pip install {package}` ({python_variable(name)} is your own interpreter)"
    return f"`lazytune env install {name} --with {package}`"


def missing_packages(name: str, needed: Mapping[str, str]) -> list[str]:
    """Problems for the optional packages a plan `needed` (`package -> why`) that `name`'s interpreter lacks: each
    names the package, why the plan needs it and the exact command that adds it. Reads package metadata only."""
    if not needed:
        return []
    try:
        found = installed_versions(name, needed)
    except EnvError as exc:
        return [str(exc)]
    return [
        f"{why} needs the package {package}, which {name}'s environment lacks: run {install_hint(name, package)}"
        for package, why in needed.items()
        if not found.get(package)
    ]


# --- making locks --------------------------------------------------------------------------------------------------

_PLATFORM = {"cpu": None, "cuda": "x86_64-manylinux_2_28"}


def _resolve(requirements: list[str], variant: str, work: Path, constraints: Path | None = None) -> dict[str, str]:
    """A fresh resolution of `requirements` for this Python (uv pip compile; pip's dry-run report without uv)."""
    infile = work / "requirements.in"
    infile.write_text("\n".join(requirements) + "\n")
    uv = find_uv()
    if uv:
        out = work / "resolved.txt"
        argv = [uv, "pip", "compile", str(infile), "-o", str(out), "--no-header", "--no-annotate", "--quiet",
                "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}",
                "--index-strategy", "unsafe-best-match", *_sources(variant=variant)]  # fmt: skip
        if _PLATFORM[variant]:
            argv += ["--python-platform", _PLATFORM[variant]]
        if constraints is not None:
            argv += ["-c", str(constraints)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=_quiet_env(), check=False)
        if proc.returncode != 0:
            raise EnvError(f"resolution failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
        text = out.read_text()
    else:
        if variant == "cuda" and not has_gpu():
            raise EnvError("locking the cuda variant on a machine without a GPU needs uv (pip install uv)")
        report = work / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                "--report", str(report), *_sources(variant=variant), "-r", str(infile)]  # fmt: skip
        if constraints is not None:
            argv += ["-c", str(constraints)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=_quiet_env(), check=False)
        if proc.returncode != 0:
            raise EnvError(f"resolution failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
        items = json.loads(report.read_text())["install"]
        text = "".join(f"{i['metadata']['name']}=={i['metadata']['version']}\n" for i in items)
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def render_lock(
    spec: EnvSpec, variant: str, pins: Mapping[str, str], optional: Mapping[str, Mapping[str, str]],
    verified: str, tool: str,
) -> str:  # fmt: skip
    """The text of a lock file: a header saying how it was made and why the odd pins are there, then the pins."""
    top = [torch_requirement(variant == "cuda") if r == TORCH else r for r in spec.requirements]
    if variant == "cuda":
        top += list(spec.cuda_requirements)
    header = [
        f"# lazytune lock: {spec.name} ({variant}), CPython {sys.version_info[0]}.{sys.version_info[1]}, Linux x86_64",
        f"# {spec.description}",
        f"# Made by `lazytune env lock {spec.name}{' --cuda' if variant == 'cuda' else ''}` on "
        f"{time.strftime('%Y-%m-%d', time.gmtime())} with {tool}, a fresh resolution of:",
        *(f"#   {r}" for r in top),
        *(f"# Added without its dependencies: {r}" for r in spec.unresolved),
        "# Why the odd pins:",
        *(f"#   - {n}" for n in spec.notes),
        *([f"#   - torch {pins['torch']}: "
           + ("PyPI's default Linux build (CUDA 13.0; driver >= 580). `env install --cuda` swaps in a CUDA 12.6 "
              "build for older drivers." if variant == "cuda" else
              "the CPU build: from pip's find-links or LAZYTUNE_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")]
          if "torch" in pins else []),
        f"# Verified: {verified}",
        "# `lazytune env install` installs exactly these lines (--no-deps); `lazytune env check` reports drift.",
    ]  # fmt: skip
    body = [f"{n}=={v}" for n, v in sorted(pins.items())] + list(spec.unresolved)
    for group, extra in optional.items():
        body.append(f"# --with {group}: `lazytune env install {spec.name} --with {group}` ({OPTIONAL_PACKAGES[group]})")
        body += [f"{OPTIONAL_PREFIX}{n}=={v}" for n, v in sorted(extra.items())]
    return "\n".join(header + body) + "\n"


def lock(
    name: str, *, cuda: bool = False, output: Path | None = None, smoke: bool = True,
    log: Callable[[str], None] = print,
) -> Path:  # fmt: skip
    """Make a new lock for `name` from a fresh resolution, for deliberate upgrades.

    The resolution is installed into a scratch environment, checked (imports) and smoke-run before the file is
    written (a CUDA lock made on a machine without a GPU is resolved and its header says it was not run). Each
    optional group is resolved against the new lock and kept when it fits. Returns the written path.
    """
    spec = get_spec(name)
    variant = "cuda" if cuda else "cpu"
    target = output or lock_path(name, variant)
    tool = "uv" if find_uv() else "pip"
    top = [torch_requirement(cuda) if r == TORCH else r for r in spec.requirements]
    if cuda:
        top += list(spec.cuda_requirements)
    with tempfile.TemporaryDirectory(prefix=f"lazytune-lock-{name}-") as tmp:
        work = Path(tmp)
        log(f"{name}: resolving {variant} requirements with {tool}")
        pins = _resolve(top, variant, work)
        base = work / "base.txt"
        base.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
        optional: dict[str, dict[str, str]] = {}
        for group in spec.optional:
            if group in pins:
                continue
            try:
                extra = _resolve([*top, group], variant, work, constraints=base)
            except EnvError as exc:
                log(f"{name}: optional {group} left out (does not resolve beside the lock): {str(exc)[-300:]}")
                continue
            optional[group] = {n: v for n, v in extra.items() if n not in pins}
        draft = work / f"{name}-{variant}.txt"
        draft.write_text(render_lock(spec, variant, pins, optional, "(pending)", tool))
        if cuda and not has_gpu():
            verified = "resolved only: no GPU where it was made (install it with `lazytune env install --cuda`)"
        elif not smoke:
            verified = "resolved only (lock made with --no-smoke)"
        else:
            scratch = dataclasses.replace(spec, locks=work)
            root = work / "env"
            root.mkdir()
            log_path = root / f".{name}.building.log"
            lock_obj = parse_lock(draft)
            build = root / name
            _create_venv(tool, build, log_path, log)
            _install_exact(tool, env_python(build), lock_obj.lines() + list(spec.unresolved), log_path, log)
            _write_standins(spec, env_python(build), log)
            try:
                smoke_result = _checked(scratch, str(env_python(build)), lock_obj, (), log_path)
            except EnvError as exc:
                raise EnvError(f"{name}: the fresh resolution does not work; lock not written:\n{exc}") from None
            verified = (f"installed, imports and smoke run ({spec.smoke}) passed, "
                        f"{time.strftime('%Y-%m-%d', time.gmtime())}")  # fmt: skip
            log(f"{name}: smoke run passed ({smoke_result['seconds']} s)")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_lock(spec, variant, pins, optional, verified, tool))
    log(f"{name}: wrote {target} ({len(pins)} packages)")
    return target
