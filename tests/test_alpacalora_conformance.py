"""alpacalora's samples are alpaca-lora's: its own prompter, templates and sample functions, run unchanged.

tests/fixtures/upstream/alpaca_lora holds tloen/alpaca-lora's finetune.py, utils/prompter.py and templates (Apache-2.0).
tests/helpers/alpaca_conformance.py runs `generate_and_tokenize_prompt` from that finetune.py and lazytune's
`build_sample` on every record x template x train_on_inputs x cutoff_len x tokenizer family (Llama-style
sentencepiece with and without add_eos_token, GPT-2 byte-level BPE, Qwen-style BPE), and LazyLLM's filter_nums rule
(cut, then keep fewer than filter_nums tokens) against `tokenize_all`. Runs in the alpacalora environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lazytune.backends.base import script
from lazytune.backends.prompts import TEMPLATES

FIXTURE = Path(__file__).parent / "fixtures" / "upstream" / "alpaca_lora"
HELPER = Path(__file__).parent / "helpers" / "alpaca_conformance.py"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from lazytune import envs

    if not os.environ.get(envs.python_variable("alpacalora")) and envs.read_stamp("alpacalora") is None:
        pytest.skip("the alpacalora environment is not installed: run `lazytune env install alpacalora`")
    work = tmp_path_factory.mktemp("alpaca-conformance")
    argv = [envs.python_for("alpacalora"), str(HELPER), str(FIXTURE), str(script("alpacalora_train.py")),
            str(TEMPLATES), str(work)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_samples_equal_alpaca_lora_s(report: dict) -> None:
    assert report["add_eos_token"] is False  # alpaca-lora's default, used by its masking
    assert report["samples"] > 10000
    assert report["mismatch_count"] == 0, json.dumps(report["mismatches"][:2], indent=1)
    # each family has records where tokenizing prompt and output apart (lazytune before) gave other ids
    assert all(f["separate_tokenization_differs"] > 0 for f in report["families"].values()), report["families"]


def test_filter_nums_is_lazyllm_s(report: dict) -> None:
    assert report["filter_checks"] == 20 and report["filter_mismatches"] == []


def test_shipped_templates_are_alpaca_lora_s() -> None:
    for name in ("alpaca", "alpaca_legacy", "alpaca_short", "vigogne"):
        ours = json.loads((TEMPLATES / f"{name}.json").read_text(encoding="utf-8"))
        theirs = json.loads((FIXTURE / "templates" / f"{name}.json").read_text(encoding="utf-8"))
        assert {k: ours[k] for k in ("prompt_input", "prompt_no_input", "response_split")} == {
            k: theirs[k] for k in ("prompt_input", "prompt_no_input", "response_split")}, name


def test_helper_is_standalone() -> None:
    """The helper runs in the backend env: it must not import lazytune (or the test package)."""
    source = HELPER.read_text(encoding="utf-8")
    assert "import lazytune" not in source and "from lazytune" not in source and "from tests" not in source
