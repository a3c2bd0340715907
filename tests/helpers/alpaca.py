"""Helpers for the alpacalora tests: alpaca data files and a look inside trained/merged models (in the backend env).

    from tests.helpers.alpaca import write_alpaca, inspect_merge
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers.lf_data import write_records

#: Runs in the backend environment (torch + transformers + peft): compares base, base+adapter and merged model.
_INSPECT = r"""
import json, sys
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, adapter_dir, merged_dir, prompt = sys.argv[1:5]
tok = AutoTokenizer.from_pretrained(merged_dir)
ids = tok(prompt, return_tensors="pt")
def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
base, merged = load(base_dir), load(merged_dir)
peft = PeftModel.from_pretrained(load(base_dir), adapter_dir).eval()
with torch.no_grad():
    lb, lm, lp = (m(**ids).logits for m in (base, merged, peft))
    gen = {}
    for name, m in (("base", base), ("merged", merged)):
        out = m.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        gen[name] = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=False)
print(json.dumps({
    "merged_vs_peft_max_diff": (lm - lp).abs().max().item(),
    "merged_vs_base_max_diff": (lm - lb).abs().max().item(),
    "generated": gen,
    "merged_has_lora_keys": any("lora" in k for k in merged.state_dict()),
}))
"""


def alpaca_records(n: int = 12) -> list[dict[str, str]]:
    """`n` short alpaca records, every other one with an input."""
    return [{"instruction": f"Say {i}", "input": "loud" if i % 2 == 0 else "", "output": f"{i} {i} {i}"}
            for i in range(n)]  # fmt: skip


def write_alpaca(path: Path, records: list[Any] | None = None, jsonl: bool = False) -> Path:
    """Write records (default `alpaca_records()`) as a JSON array, or JSON lines when `jsonl`."""
    return write_records(path, alpaca_records() if records is None else records, jsonl)


def inspect_merge(python: str, base: Path, adapter: Path, merged: Path, prompt: str) -> dict[str, Any]:
    """Load base, base+adapter (peft) and the merged model in `python`; logits differences and greedy generations."""
    proc = subprocess.run([python, "-c", _INSPECT, str(base), str(adapter), str(merged), prompt],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"inspecting the merged model failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
