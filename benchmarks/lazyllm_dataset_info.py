"""Run inside the LazyLLM environment: time LazyLLM's own dataset_info.json builder on one file.

    <venv-lazyllm>/bin/python benchmarks/lazyllm_dataset_info.py FILE WORKDIR

Calls `lazyllm.components.finetune.llamafactory.LlamafactoryFinetune._build_temp_dataset_info([FILE])`, the part of
`LlamafactoryFinetune.cmd()` that builds dataset_info.json, on an instance made without `__init__` (which would
create target folders and parse the YAML templates: not part of the data work). Prints one JSON line.
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
    data, work = argv[0], Path(argv[1])
    import lazyllm
    from lazyllm.components.finetune.llamafactory import LlamafactoryFinetune

    work.mkdir(parents=True, exist_ok=True)
    finetune = LlamafactoryFinetune.__new__(LlamafactoryFinetune)
    finetune.template_dict = {"stage": "sft"}
    finetune.temp_folder = str(work)
    base = peak_mb()
    start = time.perf_counter()
    error = None
    try:
        path, names = finetune._build_temp_dataset_info([data])
    except MemoryError:
        error = "MemoryError"
    seconds = time.perf_counter() - start
    info = json.loads(Path(path).read_text()) if error is None else None
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": round(peak_mb(), 1),
                "delta_rss_mb": round(peak_mb() - base, 1),
                "dataset_info": info,
                "error": error,
                "lazyllm_version": getattr(lazyllm, "__version__", None),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
