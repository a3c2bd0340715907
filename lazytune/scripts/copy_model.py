"""Copy a trained model's final files (weights, config, tokenizer; not checkpoints) into another folder.

Standalone (never imports lazytune). Files are hard-linked where the filesystem allows (no extra space), else copied.

    python copy_model.py --src OUTPUT_DIR --dst MERGE_DIR
"""

import argparse
import fnmatch
import os
import shutil
import sys
from pathlib import Path

MODEL_FILES = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json",
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model", "*.tiktoken",
    "chat_template.*", "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
    "value_head.*", "*.py",
)  # fmt: skip
SKIP = ("training_args.bin", "optimizer.*", "scheduler.*", "rng_state*", "trainer_state.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    files = [
        p for p in sorted(src.iterdir())
        if p.is_file() and any(fnmatch.fnmatch(p.name, g) for g in MODEL_FILES)
        and not any(fnmatch.fnmatch(p.name, g) for g in SKIP)
    ]  # fmt: skip
    if not (src / "config.json").is_file() or not any(p.suffix in (".safetensors", ".bin") for p in files):
        print(f"copy_model: {src} holds no final model (config.json + weights)", file=sys.stderr)
        return 2
    dst.mkdir(parents=True, exist_ok=True)
    for p in files:
        target = dst / p.name
        target.unlink(missing_ok=True)
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)
    print(f"copy_model: {len(files)} files from {src} to {dst}: {', '.join(p.name for p in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
