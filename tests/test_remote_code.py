"""Models that ship their own code (config.json auto_map: InternLM2, ChatGLM, Baichuan, Qwen-1): trust_remote_code.

Plan-level checks on model folders without weights, then (slow) a real tiny custom-code model trained and merged on
CPU through llamafactory and alpacalora.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import launchers
from lazytune import OptionsError, finetune
from lazytune.remote_code import remote_code_reason
from tests.helpers.custom_code import AUTO_MAP, check_custom_merged, custom_code_model
from tests.helpers.models import env_python


def cpu() -> launchers.LocalLauncher:
    return launchers.local(ngpus=0, stream=False)


def folder(root: Path, name: str, config: dict) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")
    (path / "tokenizer_config.json").write_text("{}")
    return path


INTERNLM2 = {"model_type": "internlm2", "architectures": ["InternLM2ForCausalLM"],
             "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                          "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}}  # fmt: skip


@pytest.mark.parametrize("config, needs", [
    (INTERNLM2, True),
    ({"model_type": "chatglm"}, True),          # known custom-code architectures, even without auto_map
    ({"model_type": "baichuan"}, True),
    ({"model_type": "qwen"}, True),             # Qwen-1 (Qwen2 is in transformers)
    ({"model_type": "qwen2"}, False),
    ({"model_type": "llama"}, False),
])  # fmt: skip
def test_reason(tmp_path: Path, config: dict, needs: bool) -> None:
    assert (remote_code_reason(folder(tmp_path, "m", config)) is not None) is needs


def test_llamafactory_train_and_export_yaml_carry_it(tmp_path: Path, alpaca_file: Path) -> None:
    model = folder(tmp_path, "internlm2-chat-7b", INTERNLM2)
    plan = finetune.llamafactory(model, tmp_path / "out", launcher=cpu()).plan(alpaca_file)
    files = {f.path.name: f.content for f in plan.files}
    assert yaml.safe_load(files["train.yaml"])["trust_remote_code"] is True
    assert yaml.safe_load(files["export.yaml"])["trust_remote_code"] is True
    assert any("trust_remote_code: True" in n and "auto_map" in n for n in plan.notes)


def test_plain_model_gets_no_key(tmp_path: Path, alpaca_file: Path) -> None:
    model = folder(tmp_path, "Qwen2.5-0.5B", {"model_type": "qwen2"})
    plan = finetune.llamafactory(model, tmp_path / "out", launcher=cpu()).plan(alpaca_file)
    files = {f.path.name: f.content for f in plan.files}
    assert "trust_remote_code" not in yaml.safe_load(files["train.yaml"])
    assert not any("trust_remote_code" in n for n in plan.notes)


def test_alpacalora_train_and_merge_argv(tmp_path: Path, alpaca_file: Path) -> None:
    model = folder(tmp_path, "internlm2-chat-7b", INTERNLM2)
    plan = finetune.alpacalora(model, tmp_path / "out", launcher=cpu(), batch_size=4, micro_batch_size=2,
                               val_set_size=2).plan(alpaca_file)  # fmt: skip
    train, merge = (s.argv for s in plan.steps)
    assert train[train.index("--trust-remote-code") + 1] == "true"
    assert "--trust-remote-code" in merge
    assert train[train.index("--lora-target-modules") + 1] == "wqkv,wo"  # InternLM2's attention projections


def test_collie_config_and_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lazytune.backends.collie import CollieFinetune

    model = folder(tmp_path, "internlm2-chat-7b", INTERNLM2)
    trainer = CollieFinetune(model, tmp_path / "out", launcher=cpu())
    assert trainer.options["trust_remote_code"] is True
    assert any("trust_remote_code" in n for n in trainer.notes)


def test_flagembedding_flag(tmp_path: Path) -> None:
    config = {"model_type": "custom_bert", "architectures": ["CustomBertModel"],
              "auto_map": {"AutoModel": "modeling_custom.CustomBertModel"}}  # fmt: skip
    model = folder(tmp_path, "custom-embed", config)
    trainer = finetune.flagembedding(model, tmp_path / "out", launcher=cpu(), model_kind="embed")
    assert trainer.options["trust_remote_code"] is True


@pytest.mark.parametrize("backend", ["llamafactory", "alpacalora", "collie"])
def test_false_refuses_such_a_model_at_plan_time(tmp_path: Path, backend: str) -> None:
    model = folder(tmp_path, "internlm2-chat-7b", INTERNLM2)
    with pytest.raises(OptionsError, match="trust_remote_code=False.*auto_map"):
        getattr(finetune, backend)(model, tmp_path / "out", launcher=cpu(), trust_remote_code=False)


def test_true_on_a_plain_model_is_kept(tmp_path: Path) -> None:
    model = folder(tmp_path, "Qwen2.5-0.5B", {"model_type": "qwen2"})
    trainer = finetune.alpacalora(model, tmp_path / "out", launcher=cpu(), trust_remote_code=True)
    assert trainer.options["trust_remote_code"] is True


# --- for real: a tiny model with its own code, trained and merged on CPU ------------------------------------------


@pytest.mark.slow
def test_llamafactory_trains_and_merges_a_custom_code_model(tmp_path: Path, alpaca_file: Path) -> None:
    python = env_python("llamafactory")
    model = custom_code_model(tmp_path / "models", python)
    assert json.loads((model / "config.json").read_text())["auto_map"] == AUTO_MAP
    trainer = finetune.llamafactory(model, tmp_path / "lf", launcher=cpu(), template="default", num_train_epochs=1,
                                    per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
                                    cutoff_len=64)  # fmt: skip
    merged = Path(trainer(alpaca_file))
    check = check_custom_merged(python, merged)
    assert check == {"class": "TinyLM2ForCausalLM", "model_type": "tinylm2", "refused_without_trust": True,
                     "generated": check["generated"]} and check["generated"] > 0  # fmt: skip
    assert (merged / "modeling_tinylm2.py").is_file()


@pytest.mark.slow
def test_alpacalora_trains_and_merges_a_custom_code_model(tmp_path: Path, alpaca_file: Path) -> None:
    python = env_python("alpacalora")
    model = custom_code_model(tmp_path / "models", python)
    trainer = finetune.alpacalora(model, tmp_path / "al", launcher=cpu(), lora_target_modules="q_proj,v_proj",
                                  batch_size=4, micro_batch_size=2, val_set_size=2, num_epochs=1, warmup_steps=0,
                                  logging_steps=1, cutoff_len=128)  # fmt: skip
    merged = Path(trainer(alpaca_file))
    check = check_custom_merged(python, merged)
    assert check["class"] == "TinyLM2ForCausalLM" and check["refused_without_trust"] and check["generated"] > 0
    assert (merged / "modeling_tinylm2.py").is_file()
