"""One measurement in a fresh process: `python -m benchmarks.measure WHAT FILE WORKDIR` prints one JSON line.

WHAT: `sniff` (dataset_info.json from the head of the file: what a plan does for big files), `validate` (the same
plus a check of every record), `plan` (the whole `finetune.llamafactory(...).plan()` + writing its files, with the
default validation policy). Time covers the call only (imports excluded); memory is the peak RSS of the process
(`peak_rss_mb`) and its growth during the call (`delta_rss_mb`).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    what, data, work = argv[0], Path(argv[1]), Path(argv[2])
    from lazytune.backends.llamafactory.dataset_info import dataset_info

    if what == "plan":
        from lazytune import finetune

        model = work / "model"
        model.mkdir(parents=True, exist_ok=True)
        (model / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
        trainer = finetune.llamafactory(model, work / "target", template="default")
    base = peak_mb()
    start = time.perf_counter()
    if what == "plan":
        plan = trainer.plan(data)
        plan.write_files()
        info = json.loads((plan.run_dir / "dataset_info.json").read_text())
    else:
        entries, files = dataset_info([data], "sft", work / "run", validate=(what == "validate"))
        for spec in files:
            spec.write()
        info = {e.name: e.info for e in entries}
    seconds = time.perf_counter() - start
    peak = peak_mb()
    print(json.dumps({"seconds": seconds, "peak_rss_mb": round(peak, 1), "delta_rss_mb": round(peak - base, 1),
                      "dataset_info": info}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
