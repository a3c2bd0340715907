"""LLaMA-Factory v0.9.5's own example configs (tests/fixtures/llamafactory/examples) as config_path: each is planned
as LF would run it (its keys unchanged; lazytune sets only model, data and output paths, each noted in the plan), or
refused at plan time with the reason. The data are LF's demo files the example names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lazytune import ConfigError
from lazytune.backends.llamafactory.keys import MANAGED
from tests.conftest import python_with_packages
from tests.test_llamafactory_conformance import LF_INFO, data_copy
from tests.test_llamafactory_plan import GpuLauncher, file_of, model_folder, plan_of

EXAMPLES = Path(__file__).parent / "fixtures" / "llamafactory" / "examples"
FILES = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml"))
SET_BY_LAZYTUNE = {"model_name_or_path", "dataset", "dataset_dir", "output_dir", "do_train", "media_dir"}
REFUSED = {  # example -> why lazytune refuses it at plan time (what LF does with it, in words)
    "extras/fp8/llama3_fp8_fsdp_sft.yaml": "unknown option 'fsdp_transformer_layer_cls_to_wrap'",  # LF's parser too
    "extras/multi_tokens/tokens_cfg.yaml": "unknown option",  # a token list for add_special_tokens, not a config
    "extras/nlg_eval/llama3_lora_predict.yaml": "adapter_name_or_path 'saves/llama3-8b/lora/sft' is not a folder",
    "inference/qwen3.yaml": "an inference config",
    "inference/qwen3_full_sft.yaml": "an inference config",
    "inference/qwen3_lora_sft.yaml": "an inference config",
    "inference/qwen3vl.yaml": "an inference config",
    "merge_lora/qwen3_full_sft.yaml": "an export \\(merge\\) config",
    "merge_lora/qwen3_gptq.yaml": "an export \\(merge\\) config",
    "merge_lora/qwen3_lora_sft.yaml": "an export \\(merge\\) config",
    "merge_lora/qwen3vl_lora_sft.yaml": "an export \\(merge\\) config",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data_copy(tmp_path_factory.mktemp("lf"))


@pytest.fixture(scope="module")
def gpu_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The GPU machine's LF environment: the examples' DeepSpeed / QLoRA configs find deepspeed and bitsandbytes."""
    return python_with_packages(tmp_path_factory.mktemp("gpu-env"), {"deepspeed": "0.19.8", "bitsandbytes": "0.50.2"})


HUB_STAND_INS = {"med": "alpaca_en_demo", "math": "alpaca_en_demo", "rlhf_v": "dpo_en_demo"}  # hub data: a demo


def files_for(config: dict, data: Path) -> list[Path]:
    names = [n.strip() for n in str(config.get("dataset") or "identity").split(",")]
    return [data / LF_INFO[HUB_STAND_INS.get(n, n)]["file_name"] for n in names]


def model_for(config: dict, root: Path) -> Path:
    """A model folder; pre-quantized when the example's model is (GPTQ / AWQ / AQLM checkpoints)."""
    name = str(config.get("model_name_or_path", "model"))
    folder = model_folder(root, Path(name).name)
    quant = re.search(r"gptq|awq|aqlm", name, re.I)
    if quant:
        cfg = {"model_type": "llama", "quantization_config": {"quant_method": quant.group(0).lower()}}
        (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_every_example_is_covered() -> None:
    assert len(FILES) == 48 and set(REFUSED) <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_example_plans_as_lf_runs_it_or_is_refused(tmp_path: Path, data: Path, name: str, gpu_python: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYTUNE_LLAMAFACTORY_PYTHON", gpu_python)
    path = EXAMPLES / name
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if name in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[name]):
            plan_of(tmp_path, files_for(config, data), config_path=path, launcher=GpuLauncher("H100"))
        return
    model = model_for(config, tmp_path / "models")
    plan = plan_of(tmp_path, files_for(config, data), model=model, config_path=path, launcher=GpuLauncher("H100"))
    train = yaml.safe_load(file_of(plan, "train.yaml"))
    ours = {k: v for k, v in config.items() if k not in MANAGED and v is not None}
    if "tokenized_path" in ours:  # keyed by data + settings under the example's folder (LF reuses what it finds)
        assert Path(train.pop("tokenized_path")).parent == Path(ours.pop("tokenized_path")).resolve()
    if config.get("stage") == "orpo":
        ours.update(stage="dpo", pref_loss="orpo")
    assert {k: v for k, v in train.items() if k not in SET_BY_LAZYTUNE} == ours
    assert train["dataset"] == ",".join(p.stem for p in files_for(config, data))
    notes = "\n".join(plan.notes)
    for key in ("model_name_or_path", "dataset", "output_dir"):
        assert key in notes
    steps = [s.name for s in plan.steps]
    if "quantization_config" in (model / "config.json").read_text():
        assert steps == ["data", "train"] and plan.result == plan.target.lora and "no merge step" in notes
    elif train.get("finetuning_type", "lora") in ("lora", "oft"):
        assert steps == ["data", "train", "export"]
        export = yaml.safe_load(file_of(plan, "export.yaml"))
        assert export["finetuning_type"] == train.get("finetuning_type", "lora")
    else:
        assert steps == ["data", "train", "copy"]
