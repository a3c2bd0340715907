"""A tiny model that ships its own modeling code, as InternLM2 / ChatGLM / Baichuan / Qwen-1 folders do.

The folder holds config.json with `auto_map` pointing at `configuration_tinylm2.py` / `modeling_tinylm2.py` (written
here: a thin subclass of transformers' Llama registered under the custom model_type `tinylm2`), random weights and
the offline tokenizer of make_tiny_model.py. transformers loads it only with `trust_remote_code=True`.

    from tests.helpers.custom_code import custom_code_model, check_custom_merged
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

from tests.helpers.models import tiny_model

MODEL_TYPE = "tinylm2"

CONFIGURATION = '''\
"""TinyLM2: a Llama with its own model_type, shipped as code beside the weights (like InternLM2)."""
from transformers import LlamaConfig


class TinyLM2Config(LlamaConfig):
    model_type = "tinylm2"
'''

MODELING = '''\
"""TinyLM2 modeling code: transformers' Llama under the custom config class."""
from transformers import LlamaForCausalLM

from .configuration_tinylm2 import TinyLM2Config


class TinyLM2ForCausalLM(LlamaForCausalLM):
    config_class = TinyLM2Config
'''

AUTO_MAP = {
    "AutoConfig": "configuration_tinylm2.TinyLM2Config",
    "AutoModelForCausalLM": "modeling_tinylm2.TinyLM2ForCausalLM",
}


def make_custom_code(folder: Path) -> Path:
    """Turn a Llama folder into one that needs its own code: the .py files and config.json's auto_map."""
    (folder / "configuration_tinylm2.py").write_text(CONFIGURATION)
    (folder / "modeling_tinylm2.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=MODEL_TYPE, architectures=["TinyLM2ForCausalLM"], auto_map=AUTO_MAP)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def custom_code_model(tmp_root: Path, python: str, name: str = "tinylm2-custom-code") -> Path:
    """A tiny custom-code model under `tmp_root` (built once from a tiny Llama made with `python`)."""
    folder = Path(tmp_root) / name
    done = folder / ".custom_code_done"
    if done.is_file():
        return folder
    llama = tiny_model(Path(tmp_root), "llama", python)
    with open(Path(tmp_root) / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(llama, folder)
            make_custom_code(folder)
            done.write_text("")
    return folder


_CHECK = r"""
import json, sys
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
merged = sys.argv[1]
try:
    AutoConfig.from_pretrained(merged)
    refused = False
except Exception:  # transformers does not know model_type tinylm2 without the folder's code
    refused = True
model = AutoModelForCausalLM.from_pretrained(merged, trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(merged)
ids = tok("Repeat the number 3", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
print("CHECK " + json.dumps({"class": type(model).__name__, "model_type": model.config.model_type,
      "refused_without_trust": refused, "generated": out.shape[1] - ids.shape[1]}))
"""


def check_custom_merged(python: str, merged: Path) -> dict:
    """Load the merged folder with its own code (in `python`) and generate; also whether it loads without it."""
    proc = subprocess.run([python, "-c", _CHECK, str(merged)], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)  # the refused load asks "run the custom code? [y/N]": no
    # that question has no newline, so the CHECK line may follow it on the same line
    line = next((x[x.index("CHECK {"):] for x in proc.stdout.splitlines() if "CHECK {" in x), None)
    if proc.returncode != 0 or line is None:
        raise AssertionError(f"loading {merged} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")  # fmt: skip
    return json.loads(line[len("CHECK ") :])
