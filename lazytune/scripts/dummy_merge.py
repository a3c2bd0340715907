"""Dummy "merge": copies the base model's config and tokenizer files next to a record of what was merged."""

import argparse
import glob
import json
import shutil
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--cp-files", default="tokeniz*")
    ap.add_argument("--fail", action="store_true")
    args = ap.parse_args()
    if args.fail:
        print("dummy merge: failing on purpose", file=sys.stderr)
        return 3
    if not (Path(args.adapter) / "adapter_config.json").is_file():
        print(f"dummy merge: no adapter in {args.adapter}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(args.base)
    copied = []
    for pattern in ["config.json", args.cp_files]:
        for f in glob.glob(str(base / pattern)):
            if Path(f).is_file():
                shutil.copy2(f, out / Path(f).name)
                copied.append(Path(f).name)
    (out / "merged_from.json").write_text(json.dumps({"base": str(base), "adapter": args.adapter, "copied": copied}))
    print(f"dummy merge: wrote {out} ({len(copied)} files copied)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
