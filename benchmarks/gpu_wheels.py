"""`make gpu-wheels`: download, on a machine with a package index, the wheels an offline GPU box lacks for
`make gpu-check`, into `.whl/` (at most 64 MiB in all).

    python -m benchmarks.gpu_wheels [--have FILE] [--python-version 3.12] [--out .whl] [--dry-run]

The target is a Python that already has torch (+CUDA), transformers, peft, accelerate and the usual scientific
stack; `--have` is that Python's `pip list --format=freeze` (or one package name per line), default
benchmarks/gpu_image_packages.txt (the packages of the GPU image this project is lent). Packages it already has are
not downloaded. Two sets:

- `.whl/common/`: LLaMA-Factory 0.9.5 and what it needs beyond the image, bitsandbytes (QLoRA), DeepSpeed (built here
  from its source distribution: it has no wheel; pure Python, its CUDA ops compile on first use), FlagEmbedding.
- `.whl/collie/`: CoLLiE 1.0.7 with its own transformers 4.40 / peft 0.10 / tokenizers 0.19 (it breaks on newer
  ones); installed into a separate folder that only CoLLiE's steps put first on their path.

Versions are the ones lazytune's managed environments run with (lazytune/envs.py). Every download is `--no-deps`:
the list is the whole list, so nothing unexpected travels.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MIB = 64
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

COMMON = (
    # LLaMA-Factory 0.9.5 (installed --no-deps: its declared deps pull gradio/torchvision/av, unused for training)
    "llamafactory==0.9.5", "trl==0.24.0", "datasets==4.0.0", "dill==0.3.8", "multiprocess==0.70.16",
    "omegaconf==2.4.0", "fire==0.7.1", "termcolor==3.3.0", "tyro==0.8.14", "docstring_parser==0.18.0",
    "shtab==1.13.0", "pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "bitsandbytes==0.50.2",  # QLoRA
    "deepspeed==0.19.8", "hjson==3.1.0",  # single-GPU DeepSpeed
    "FlagEmbedding==1.4.2",
    "msgspec==0.22.0",  # lazytune's own data scan (a core dependency), run by the box's Python
)  # fmt: skip
# Downloaded even where the target has the package: the versions it has break these (datasets 4.0 needs fsspec
# <= 2025.3.0, and LLaMA-Factory 0.9.5 needs datasets <= 4.0).
PINNED = ("fsspec==2025.3.0",)
# CoLLiE's own stack; always downloaded (the image's newer transformers/peft/hub break it).
COLLIE = ("collie-lm==1.0.7", "transformers==4.40.2", "tokenizers==0.19.1", "peft==0.10.0",
          "huggingface_hub==0.36.2", "megatron-core==0.2.0")  # fmt: skip
SOURCE_ONLY = {"deepspeed"}  # no wheel on the index: `pip wheel` builds a pure-Python one


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_have(path: Path) -> set[str]:
    """Package names from `pip list --format=freeze` / `pip freeze` output or a plain list of names."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonical(re.split(r"[=<>!~ @]", line, maxsplit=1)[0]))
    return names


def missing(requirements: tuple[str, ...], have: set[str]) -> list[str]:
    return [r for r in requirements if canonical(r.split("==")[0]) not in have]


def commands(python_version: str, out: Path, have: set[str]) -> list[list[str]]:
    """The pip commands (argv lists) that fill `out`."""
    argvs = []
    platform = [x for p in PLATFORMS for x in ("--platform", p)]
    for folder, reqs in (("common", [*missing(COMMON, have), *PINNED]), ("collie", list(COLLIE))):
        binary = [r for r in reqs if canonical(r.split("==")[0]) not in SOURCE_ONLY]
        source = [r for r in reqs if canonical(r.split("==")[0]) in SOURCE_ONLY]
        if binary:
            argvs.append([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                          "--python-version", python_version, "--implementation", "cp", *platform,
                          "-d", str(out / folder), *binary])  # fmt: skip
        if source:
            argvs.append([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out / folder), *source])
    return argvs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--have", type=Path, default=ROOT / "benchmarks" / "gpu_image_packages.txt")
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--out", type=Path, default=ROOT / ".whl")
    ap.add_argument("--dry-run", action="store_true", help="print the pip commands, download nothing")
    args = ap.parse_args(argv)
    have = read_have(args.have)
    argvs = commands(args.python_version, args.out, have)
    for a in argvs:
        print("$ " + " ".join(a), flush=True)
    if args.dry_run:
        return 0
    if args.out.exists():
        shutil.rmtree(args.out)
    for a in argvs:
        subprocess.run(a, check=True)
    wheels = sorted(args.out.rglob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.relative_to(args.out)}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.out}")
    if total > LIMIT_MIB * 2**20:
        print(f"gpu-wheels: more than {LIMIT_MIB} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
