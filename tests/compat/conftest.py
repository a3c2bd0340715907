"""A LazyLLM user's machine, for the ported calls: models found by name under LAZYTUNE_MODEL_PATH (LazyLLM's
`model_path`), data by relative path under LAZYTUNE_DATA_PATH (its `data_path`), targets under
LAZYTUNE_TRAIN_TARGET_ROOT, and a GPU box: a fake `nvidia-smi` listing 8 idle H100s (no GPU here; nothing that needs
one is run: real-backend calls are planned, the dummy runs for real). `sbatch`/`scontrol` are absent unless a test
adds them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import lf_data
from tests.helpers.embed import write_triples

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"


def _config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def _xlmr_large_reranker() -> dict:
    config = _config("xlm-roberta-base")
    config.update(architectures=["XLMRobertaForSequenceClassification"], hidden_size=1024, num_hidden_layers=24,
                  num_attention_heads=16, intermediate_size=4096)  # fmt: skip
    return config


def _bert_large_zh() -> dict:
    config = _config("bert-base-uncased")
    config.update(architectures=["BertModel"], hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, vocab_size=21128)  # fmt: skip
    return config


#: The model names LazyLLM's tests and docs use -> a config.json of that architecture (stored fixtures; sizes of the
#: real models where the fixture is a smaller sibling). No weights: nothing here loads a model.
MODELS = {
    "internlm2-chat-7b": lambda: _config("internlm2-7b"),
    "qwen2-1.5b": lambda: {**_config("Qwen2.5-0.5B"), "hidden_size": 1536, "intermediate_size": 8960,
                           "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2},
    "qwen1.5-0.5b-chat": lambda: _config("Qwen2.5-0.5B"),
    "qwen2.5-vl-3b-instruct": lambda: _config("Qwen2-VL-7B-Instruct"),
    "bge-m3": lambda: _config("bge-m3"),
    "bge-reranker-large": _xlmr_large_reranker,
    "bge-large-zh-v1.5": _bert_large_zh,
}


@dataclass
class LazyllmMachine:
    root: Path
    models: Path
    data: Path
    targets: Path

    def target(self, name: str) -> Path:
        return self.targets / name


def fake_bin(folder: Path, gpus: int, slurm: bool = False) -> Path:
    """nvidia-smi listing `gpus` idle H100s; with `slurm`, sbatch/scontrol/squeue that only exist (never called to
    run anything; `scontrol ping` answers UP, so that `launchers.remote()` takes the controller as up)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"echo '{i}, GPU-fake-{i}, NVIDIA H100 80GB HBM3, 81559, 1, 81558'\n" for i in range(gpus))
    (folder / "nvidia-smi").write_text("#!/bin/sh\n" + lines)
    names = ("sbatch", "scontrol", "squeue", "scancel") if slurm else ()
    for name in names:
        ping = 'if [ "$1" = ping ]; then echo "Slurmctld(primary) at fake is UP"; exit 0; fi\n'
        ping = ping if name == "scontrol" else ""
        (folder / name).write_text(f"#!/bin/sh\n{ping}echo 'not for running' >&2\nexit 1\n")
    for p in folder.iterdir():
        p.chmod(0o755)
    return folder


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LazyllmMachine:
    m = LazyllmMachine(tmp_path, tmp_path / "models", tmp_path / "data", tmp_path / "targets")
    for name, config in MODELS.items():
        folder = m.models / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config()))
        # a tokenizer file that lazytune's checks see but do not parse (nothing loads these models)
        (folder / "tokenizer.model").write_bytes(b"placeholder")
        (folder / "tokenizer_config.json").write_text("{}")
    lf_data.alpaca(m.data / "alpaca" / "alpaca_data_zh_128.json")
    lf_data.alpaca(m.data / "train.json")
    write_triples(m.data / "sft_embeding" / "embedding.json", n=256, fmt="json")
    write_triples(m.data / "sft_embeding" / "rerank.jsonl", n=256)
    m.targets.mkdir()
    bin_dir = fake_bin(tmp_path / "bin", gpus=8)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LAZYTUNE_MODEL_PATH", str(m.models))
    monkeypatch.setenv("LAZYTUNE_DATA_PATH", str(m.data))
    monkeypatch.setenv("LAZYTUNE_TRAIN_TARGET_ROOT", str(m.targets))
    monkeypatch.chdir(tmp_path)
    return m


def add_slurm(machine: LazyllmMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put (inert) SLURM commands on PATH, so `launchers.remote()` resolves to SLURM."""
    folder = fake_bin(machine.root / "bin-slurm", gpus=8, slurm=True)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")


def copy_model(machine: LazyllmMachine, name: str, new: str) -> Path:
    shutil.copytree(machine.models / name, machine.models / new)
    return machine.models / new
