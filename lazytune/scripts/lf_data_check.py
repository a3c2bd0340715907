"""Run in the llamafactory environment before training: how many records LLaMA-Factory keeps, and why it drops the rest.

    python lf_data_check.py TRAIN_YAML REPORT_JSON [--strict]

Reads and preprocesses each dataset of TRAIN_YAML with LF's own loader (`_get_merged_dataset` = read + convert,
`_get_preprocessed_dataset` = tokenize and filter), exactly as `llamafactory-cli train` will, and writes
REPORT_JSON: per dataset the records read, the examples kept, and the drops by reason with the first record numbers
(1-based, in file order). `--strict`: exit 3 when any record would not be trained on, before training starts.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile

import yaml

DATA_STAGE = {"dpo": "rm", "orpo": "rm", "rm": "rm", "kto": "kto", "ppo": "ppo", "pt": "pt", "sft": "sft"}
IGNORE_INDEX = -100
HARDWARE_KEYS = {"deepspeed", "fsdp", "fsdp_config", "bf16", "fp16", "pure_bf16", "tf32", "quantization_bit",
                 "quantization_method", "quantization_type", "double_quantization", "quantization_device_map",
                 "use_badam", "use_galore", "use_apollo", "load_best_model_at_end", "pissa_init", "use_kt",
                 "use_unsloth", "use_unsloth_gc", "enable_liger_kernel", "flash_attn", "resume_from_checkpoint",
                 "ddp_timeout", "ray_run_name", "ray_storage_path", "ray_num_workers", "resources_per_worker",
                 "placement_strategy", "use_ray", "optim"}  # fmt: skip
SHOW = 5


def invalid(row: dict, stage: str) -> str | None:
    """Why LF's processor drops this converted row (its own checks, in words), or None."""
    prompt, response = row["_prompt"] or [], row["_response"] or []
    if not prompt and not response:
        return "skipped by LF's converter (messages out of order, or an odd number of them)"
    if stage == "sft" and (len(prompt) % 2 != 1 or len(response) != 1):
        return "not one prompt and one response"
    if stage == "rm" and (len(prompt) % 2 != 1 or len(response) < 2):
        return "not a prompt with a chosen and a rejected response"
    if stage == "kto" and len(response) < 2:
        return "no KTO response pair"
    if stage == "ppo" and len(prompt) % 2 != 1:
        return "not a prompt"
    return None


def main(argv: list[str]) -> int:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # one CPU process: LF's checks for multi-GPU runs do not apply
    train_yaml, report_path = argv[0], argv[1]
    strict = "--strict" in argv[2:]
    args = yaml.safe_load(open(train_yaml, encoding="utf-8"))
    # One process, no GPU, nothing written: keys that only shape the hardware side of training would make LF's
    # argument checks refuse a single CPU process (DeepSpeed, FSDP, bf16, quantization, ...); data is unaffected.
    args = {k: v for k, v in args.items() if k not in HARDWARE_KEYS}
    scratch = tempfile.mkdtemp(prefix="lazytune-data-check-")  # LF may write its logging folder there
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    args.update(report_to="none", output_dir=scratch)
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.loader import _get_merged_dataset, _get_preprocessed_dataset
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    try:
        model_args, data_args, training_args, _finetuning, _generating = get_train_args(args)
        tokenizer_module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    except Exception as exc:  # noqa: BLE001 - the check is informative unless strict; training decides
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump({"error": f"{type(exc).__name__}: {exc}"}, f)
        print(f"lazytune data check: could not set up LF's loader ({type(exc).__name__}: {exc}); not counted",
              flush=True)  # fmt: skip
        return 3 if strict else 0
    stage = DATA_STAGE.get(args.get("stage", "sft"), "sft")
    report: dict = {"stage": args.get("stage", "sft"), "datasets": {}, "records_in": 0, "examples_trained": 0}
    for name in data_args.dataset or []:
        aligned = _get_merged_dataset([name], model_args, data_args, training_args, stage)
        rows = list(aligned)
        drops: dict[str, list[int]] = {}
        valid = []
        for i, row in enumerate(rows):
            why = invalid(row, stage)
            if why:
                drops.setdefault(why, []).append(i + 1)
            else:
                valid.append(i + 1)
        processed = _get_preprocessed_dataset(aligned, data_args, training_args, stage, template,
                                              tokenizer_module["tokenizer"], tokenizer_module.get("processor"))
        kept = len(processed)
        entry = {"records": len(rows), "kept": kept}
        if stage == "pt":  # LF packs the texts into blocks of cutoff_len: blocks, not records
            entry["blocks"] = kept
            entry["kept"] = len(rows) - sum(map(len, drops.values()))
        elif stage == "sft" and kept == len(valid):
            cut = [valid[j] for j, ex in enumerate(processed) if all(t == IGNORE_INDEX for t in ex["labels"])]
            if cut:
                drops["cut off: no response token left within cutoff_len"] = cut
        entry["drops"] = {why: {"count": len(ids), "first": ids[:SHOW]} for why, ids in drops.items()}
        if stage != "pt" and kept < len(valid):  # dropped by a rule of LF's processor not mirrored above
            entry["drops"]["dropped in LF's preprocessing"] = {"count": len(valid) - kept, "first": []}
        cut = entry["drops"].get("cut off: no response token left within cutoff_len", {}).get("count", 0)
        entry["trained"] = entry["kept"] - cut
        report["datasets"][name] = entry
        report["records_in"] += entry["records"]
        report["examples_trained"] += entry["trained"]
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    dropped = report["records_in"] - report["examples_trained"]
    print(f"lazytune data check: {report['records_in']} record(s) in, {report['examples_trained']} trained on, "
          f"{dropped} not", flush=True)  # fmt: skip
    for name, entry in report["datasets"].items():
        for why, d in entry["drops"].items():
            where = f" (records {', '.join(map(str, d['first']))})" if d["first"] else ""
            print(f"  {name}: {d['count']} {why}{where}", flush=True)
    if strict and dropped:
        print("strict_data=True: not training while records would be dropped", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
