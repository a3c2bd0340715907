"""The README's main job: LLaMA-Factory LoRA fine-tuning + merge of an embedded tiny model, on CPU, in about a minute.

    python -m lazytune.demo [--out demo-run]

Builds a tiny random Qwen2-style model (lazytune/scripts/make_tiny_model.py, nothing downloaded) and a small
built-in alpaca dataset under --out, then runs `finetune.llamafactory(...)(data)`: the same call you make with a
real model. Then it shows what training changed: a held-out prompt answered by the base and by the fine-tuned model
(`lazytune chat --compare`), and both measured on the held-out records (`lazytune eval`). Needs the llamafactory
environment (`lazytune env install llamafactory`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import launchers

from . import finetune, runs
from .backends.base import backend_python, script
from .errors import LazytuneError
from .evaluate import table

MODEL_NAME = "Qwen2.5-tiny-demo"  # the folder name gives the `qwen` chat template
OPTIONS = dict(num_train_epochs=4, per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=2e-3,
               logging_steps=1, cutoff_len=64, lora_rank=8)  # fmt: skip


def demo_records() -> list[dict[str, str]]:
    """32 instruction/output pairs a tiny model can fit in a few steps."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    records = [{"instruction": f"Spell the digit {i}", "input": "", "output": words[i]} for i in range(10)]
    records += [{"instruction": "Repeat the word", "input": w, "output": f"{w} {w}"} for w in words]
    records += [{"instruction": f"What comes after {i}?", "input": "", "output": str(i + 1)} for i in range(12)]
    return records


def split_records(records: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, held out): every 8th record is kept out of training, for the comparison at the end."""
    return ([r for i, r in enumerate(records) if i % 8 != 7], [r for i, r in enumerate(records) if i % 8 == 7])


def build_model(folder: Path, python: str) -> Path:
    """The tiny model (built once; reused when the folder already holds it)."""
    if (folder / "tiny_model.json").is_file():
        return folder
    argv = [python, script("make_tiny_model.py"), "--out", str(folder), "--arch", "qwen2"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LazytuneError(f"building the demo model failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return folder


def check_environment(python: str) -> None:
    probe = subprocess.run([python, "-c", "import llamafactory"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise LazytuneError(
            f"LLaMA-Factory is not importable with {python}: run `lazytune env install llamafactory` "
            "(or set LAZYTUNE_LLAMAFACTORY_PYTHON to an interpreter that has it)"
        )


def run(out: Path, stream: bool = False) -> dict:
    """Build model + data under `out`, train and merge; returns {"merge", "final_loss", "manifest", ...}."""
    out = out.expanduser().absolute()
    python = backend_python("llamafactory")
    check_environment(python)
    model = build_model(out / "model" / MODEL_NAME, python)
    data, heldout = out / "data" / "alpaca_demo.json", out / "data" / "heldout.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    train_records, heldout_records = split_records(demo_records())
    data.write_text(json.dumps(train_records, indent=1) + "\n", encoding="utf-8")
    heldout.write_text(json.dumps(heldout_records, indent=1) + "\n", encoding="utf-8")
    trainer = finetune.llamafactory(model, out / "target", launcher=launchers.local(ngpus=0, stream=stream),
                                    overwrite=True, **OPTIONS)  # fmt: skip
    merged = trainer(data)
    manifest_path = out / "target" / "lazytune_run.json"
    manifest = json.loads(manifest_path.read_text())
    # what training changed: one held-out prompt answered by both models, and both measured on the held-out records
    run = runs.find_run(out / "target")
    prompt = heldout_records[0]["instruction"]
    cpu = launchers.local(ngpus=0, stream=False)
    answers = run.chat(prompt, compare=True, max_new_tokens=16, launcher=cpu)
    report = run.evaluate(heldout, launcher=cpu, progress="none")
    return {"merge": merged, "lora": str(trainer.target.lora), "final_loss": manifest["metrics"].get("final_loss"),
            "seconds": manifest.get("seconds"), "manifest": str(manifest_path), "prompt": prompt,
            "expected": heldout_records[0]["output"], "answers": answers, "eval": report}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lazytune.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--out", default="demo-run", help="folder for the model, data and results (default: demo-run)")
    ap.add_argument("--stream", action="store_true", help="show LLaMA-Factory's own output")
    args = ap.parse_args(argv)
    try:
        result = run(Path(args.out), stream=args.stream)
    except launchers.JobFailed as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except LazytuneError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print(f"merged model : {result['merge']}")
    print(f"LoRA adapter : {result['lora']}")
    print(f"final loss   : {result['final_loss']}")
    print(f"run manifest : {result['manifest']} ({result['seconds']} s)")
    print(f"\nheld-out prompt : {result['prompt']!r} (reference answer: {result['expected']!r})")
    print(f"base model      : {result['answers']['base']!r}")
    print(f"fine-tuned      : {result['answers']['tuned']!r}")
    print("(a 140k-parameter random model learns the format, not the words: the loss below shows what changed)")
    print(f"\nbase vs fine-tuned on the {result['eval']['records']} held-out records (lazytune eval):")
    print(table(result["eval"]))
    print(f"\ntry: lazytune chat {Path(args.out) / 'target'}   |   lazytune eval {Path(args.out) / 'target'} "
          f"--data {Path(args.out) / 'data' / 'heldout.json'} --generate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
