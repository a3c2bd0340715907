"""finetune.llamafactory as LazyLLM users configure it: their own dataset_info.json (`dataset_dir` + dataset names),
`do_train: true` in their configs, LazyLLM's class names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import launchers
from lazytune import ConfigError, DataError, OptionsError, finetune
from tests.helpers import lf_data


def model(tmp_path: Path) -> Path:
    folder = tmp_path / "Qwen2.5-0.5B-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    return folder


def user_dataset_dir(tmp_path: Path) -> Path:
    """A LLaMA-Factory style data folder: dataset_info.json registering two local files and a hub dataset."""
    folder = tmp_path / "my data"
    folder.mkdir()
    lf_data.alpaca(folder / "alpaca_demo.json")
    lf_data.alpaca(folder / "identity.json")
    info = {
        "alpaca_en_demo": {"file_name": "alpaca_demo.json"},
        "identity": {"file_name": "identity.json"},
        "from_hub": {"hf_hub_url": "llamafactory/alpaca_en"},
    }
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def train_yaml(plan) -> dict:
    return yaml.safe_load(next(f for f in plan.files if f.path.name == "train.yaml").content)


def cpu() -> launchers.LocalLauncher:
    return launchers.local(ngpus=0, stream=False)


@pytest.mark.parametrize("data", ["alpaca_en_demo,identity", ["alpaca_en_demo", "identity"]])
def test_registered_datasets_by_name(tmp_path: Path, data: object) -> None:
    folder = user_dataset_dir(tmp_path)
    plan = finetune.llamafactory(model(tmp_path), tmp_path / "out", dataset_dir=str(folder), launcher=cpu()).plan(data)
    y = train_yaml(plan)
    assert y["dataset"] == "alpaca_en_demo,identity" and y["dataset_dir"] == str(folder.absolute())
    assert not any(f.path.name == "dataset_info.json" for f in plan.files)  # the user's own is used
    assert [p.name for p in plan.data] == ["alpaca_demo.json", "identity.json"]


def test_dataset_dir_from_the_users_config(tmp_path: Path) -> None:
    folder = user_dataset_dir(tmp_path)
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"dataset_dir": str(folder), "dataset": "ignored", "do_train": True,
                                      "learning_rate": 1e-4}))  # fmt: skip
    plan = finetune.llamafactory(model(tmp_path), tmp_path / "out", config_path=config, launcher=cpu()).plan(
        "identity")
    assert train_yaml(plan)["dataset"] == "identity"
    assert not any("'dataset_dir' is replaced" in n for n in plan.notes)
    assert any("'dataset' is replaced" in n for n in plan.notes)


def test_dataset_keyword_names_the_default_data(tmp_path: Path) -> None:
    """docs/en/Learn/ai_coding.md: {'dataset_dir': DATASET_DIR, 'dataset': 'tech_qa', ...}."""
    folder = user_dataset_dir(tmp_path)
    trainer = finetune.llamafactory(model(tmp_path), tmp_path / "out", dataset_dir=folder, dataset="identity",
                                    launcher=cpu())  # fmt: skip
    assert train_yaml(trainer.plan())["dataset"] == "identity"
    assert train_yaml(trainer.plan("alpaca_en_demo"))["dataset"] == "alpaca_en_demo"
    with pytest.raises(OptionsError, match="'dataset' is set by lazytune"):
        finetune.llamafactory(model(tmp_path), tmp_path / "out", dataset="identity")


def test_lazyllms_placeholder_means_data_files(tmp_path: Path) -> None:
    trainer = finetune.llamafactory(model(tmp_path), tmp_path / "out", dataset_dir="lazyllm_temp_dir",
                                    launcher=cpu())  # fmt: skip
    plan = trainer.plan(lf_data.alpaca(tmp_path / "d.json"))
    assert any(f.path.name == "dataset_info.json" for f in plan.files)


def test_registered_problems_all_listed(tmp_path: Path) -> None:
    folder = user_dataset_dir(tmp_path)
    trainer = finetune.llamafactory(model(tmp_path), tmp_path / "out", dataset_dir=folder, launcher=cpu())
    with pytest.raises(DataError) as info:
        trainer.plan("alpaca_en_dem,from_hub")
    text = str(info.value)
    assert "did you mean 'alpaca_en_demo'" in text and "never downloads" in text


def test_dataset_dir_without_dataset_info(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset_info.json does not exist"):
        finetune.llamafactory(model(tmp_path), tmp_path / "out", dataset_dir=tmp_path)


def test_do_train(tmp_path: Path) -> None:
    trainer = finetune.llamafactory(model(tmp_path), tmp_path / "out", do_train=True, launcher=cpu())
    assert train_yaml(trainer.plan(lf_data.alpaca(tmp_path / "d.json")))["do_train"] is True
    with pytest.raises(OptionsError, match="do_train"):
        finetune.llamafactory(model(tmp_path), tmp_path / "out2", do_train=False)


def test_lazyllm_class_names() -> None:
    assert finetune.LlamafactoryFinetune is finetune.llamafactory
    assert finetune.AlpacaloraFinetune is finetune.alpacalora and finetune.CollieFinetune is finetune.collie
    assert finetune.FlagembeddingFinetune is finetune.flagembedding and finetune.AutoFinetune is finetune.auto
    assert finetune.DummyFinetune is finetune.dummy


@pytest.mark.slow
def test_registered_dataset_trains_for_real(tmp_path: Path) -> None:
    """LLaMA-Factory reads the user's own dataset_info.json: a real tiny LoRA run on CPU."""
    from tests.helpers.models import env_python, tiny_model

    python = env_python("llamafactory")
    base = tiny_model(tmp_path / "models", "qwen2", python, name="Qwen2.5-tiny")
    folder = user_dataset_dir(tmp_path)
    trainer = finetune.llamafactory(base, tmp_path / "out", dataset_dir=folder, launcher=cpu(), num_train_epochs=1,
                                    per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
                                    cutoff_len=64)  # fmt: skip
    merged = Path(trainer("alpaca_en_demo,identity"))
    assert (merged / "config.json").is_file()
    m = json.loads((tmp_path / "out" / "lazytune_run.json").read_text())
    assert m["state"] == "COMPLETED" and m["metrics"]["steps"] > 0
