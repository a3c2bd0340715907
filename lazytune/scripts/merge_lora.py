"""Merge a PEFT LoRA adapter into its base model and save the result as safetensors.

Standalone (never imports lazytune); run it with the Python of the backend environment that trained the adapter:

    python merge_lora.py --base BASE_DIR --adapter ADAPTER_DIR --output MERGE_DIR [--cp-files 'tokeniz*']

base + adapter -> PeftModel -> merge_and_unload() -> save_pretrained(safetensors, 5 GB shards), on the CPU by default
with low memory use: the weights stay in the base's dtype (bf16: 2 bytes per parameter of host RAM) and no GPU is
touched, so a model larger than one GPU merges, and a merge never competes with training for GPU memory. Then every
file of the base folder matching a `--cp-files` glob (default `tokeniz*`, like LazyLLM's `cp base/tokeniz* merge`) is
copied over. The result
is written into a hidden sibling folder and renamed into place at the end, so a failed merge never leaves a
half-written model where the merged one should be.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import time
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")


def fail(message: str, code: int = 2) -> int:
    print(f"merge_lora: error: {message}", file=sys.stderr, flush=True)
    return code


def copy_matching(base: Path, patterns: list[str], out: Path) -> list[str]:
    """Copy the plain files of `base` matching any glob in `patterns` into `out`; returns their names."""
    copied = []
    for pattern in patterns:
        for name in sorted(glob.glob(pattern, root_dir=base)):
            src = base / name
            if src.is_file() and not (out / src.name).exists():  # like `cp` without -r; merged files win
                shutil.copy2(src, out / src.name)
                copied.append(src.name)
    return copied


def merge(base: Path, adapter: Path, out: Path, dtype_name: str, device: str = "cpu",
          trust_remote_code: bool = False) -> None:
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = "auto" if dtype_name == "auto" else getattr(torch, dtype_name)
    # transformers < 4.56 (e.g. CoLLiE's 4.40) only knows `torch_dtype`; 5.x renamed it `dtype`.
    version = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    dtype_kw = "dtype" if version >= (4, 56) else "torch_dtype"
    # device_map puts the weights where they are merged as they load (no second copy); "cpu" never touches a GPU.
    # A model with its own code (auto_map) loads only with trust_remote_code; save_pretrained then copies its .py
    # files into the merged folder, so the result loads the same way.
    model = AutoModelForCausalLM.from_pretrained(base, **{dtype_kw: dtype}, low_cpu_mem_usage=True,
                                                 device_map={"": device}, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, adapter, torch_device=device)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="base model folder")
    ap.add_argument("--adapter", required=True, help="PEFT adapter folder (adapter_config.json)")
    ap.add_argument("--output", required=True, help="merged model folder (replaced if it exists)")
    ap.add_argument("--cp-files", action="append", default=None,
                    help="glob of base-folder files to copy into the output (repeatable; default 'tokeniz*'; "
                         "'' copies nothing)")
    ap.add_argument("--dtype", choices=DTYPES, default="auto", help="dtype to merge and save in (auto: the base's)")
    ap.add_argument("--device", default="cpu", help="where to merge: cpu (default: any size, no GPU memory) or "
                    "cuda:N (faster, needs the whole model in that GPU's memory)")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="load the base model's own code (config.json auto_map)")
    args = ap.parse_args()

    base, adapter, out = Path(args.base), Path(args.adapter), Path(args.output)
    patterns = [p for p in (args.cp_files if args.cp_files is not None else ["tokeniz*"]) if p]
    if not (base / "config.json").is_file():
        return fail(f"{base} has no config.json: not a Hugging Face model folder")
    if not (adapter / "adapter_config.json").is_file():
        return fail(f"{adapter} has no adapter_config.json: no LoRA adapter to merge (did training save one?)")
    if out.resolve() in (base.resolve(), adapter.resolve()):
        return fail(f"--output {out} must differ from --base and --adapter")

    started = time.time()
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    partial.mkdir(parents=True)
    try:
        merge(base, adapter, partial, args.dtype, args.device, args.trust_remote_code)
        copied = copy_matching(base, patterns, partial)
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"merge_lora: merged {adapter} into {base} -> {out} in {time.time() - started:.1f} s; "
          f"copied from base: {', '.join(copied) or 'nothing'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
