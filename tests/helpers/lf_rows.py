"""Run with the llamafactory environment's Python: the rows LLaMA-Factory's own loader makes of dataset entries.

    <lf-python> tests/helpers/lf_rows.py JOBS.json OUT.json

JOBS.json: [{"id": ..., "dataset_dir": ..., "media_dir": ... or null, "name": ..., "info": {dataset_info entry}}].
Each job's entry is written to a private dataset_info.json and loaded with LF's `get_dataset_list` +
`_load_single_dataset` (read + align: the step that drops or mangles records), exactly as `llamafactory-cli train`
does. OUT.json: {id: {"rows": [...]} or {"error": "..."}}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def main() -> int:
    jobs = json.load(open(sys.argv[1], encoding="utf-8"))
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    out = {}
    work = tempfile.mkdtemp(prefix="lf-rows-")
    training = Seq2SeqTrainingArguments(output_dir=os.path.join(work, "out"), report_to=[])
    model = ModelArguments(model_name_or_path="unused", cache_dir=os.path.join(work, "cache"))
    for job in jobs:
        info_dir = os.path.join(work, job["id"])
        os.makedirs(info_dir, exist_ok=True)
        entry = dict(job["info"])
        entry["file_name"] = os.path.join(job["dataset_dir"], entry["file_name"])  # absolute either way
        with open(os.path.join(info_dir, "dataset_info.json"), "w", encoding="utf-8") as f:
            json.dump({job["name"]: entry}, f)
        data = DataArguments(dataset_dir=info_dir, media_dir=job.get("media_dir") or job["dataset_dir"],
                             preprocessing_num_workers=None)
        try:
            attr = get_dataset_list([job["name"]], data.dataset_dir)[0]
            rows = _load_single_dataset(attr, model, data, training)
            out[job["id"]] = {"rows": [dict(r) for r in rows]}
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            out[job["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
