"""finetune.collie: options, world-size checks, the no-GPU error, the plan (argv + rendered config).

No GPU here: the plans are built for launchers whose topology reports GPUs, through a fake `nvidia-smi` on PATH
(the only thing faked). The `slow` tests run the real scripts in the real `collie` environment: the training
script's preparation on CPU, its clear refusal without CUDA, and the merge step on an adapter made with the env's
peft 0.10. A real CoLLiE training run needs an NVIDIA GPU (see test_collie_trains_on_gpu).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import launchers
from lazytune import envs
from lazytune.backends.base import script
from lazytune.backends.collie.backend import MODEL_DEFAULTS, CollieFinetune, CollieNeedsGpuError
from lazytune.errors import ConfigError, OptionsError, UnknownOptionError


def fake_nvidia_smi(folder: Path, count: int) -> Path:
    """An `nvidia-smi` answering the launcher's query with `count` idle 80 GB GPUs."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"echo '{i}, GPU-fake-{i}, NVIDIA H100 80GB HBM3, 81559, 1, 81558'\n" for i in range(count))
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + lines)
    path.chmod(0o755)
    return path


@pytest.fixture
def gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Call with a count: PATH gets a fake nvidia-smi listing that many GPUs (0: an nvidia-smi listing none)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LAZYTUNE_COLLIE_PYTHON", raising=False)

    def make(count: int) -> None:
        folder = tmp_path / f"fake-bin-{count}"
        fake_nvidia_smi(folder, count)
        monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")

    return make


def model_folder(root: Path, model_type: str = "llama") -> Path:
    folder = root / f"base {model_type}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "max_position_embeddings": 128}))
    (folder / "tokenizer.json").write_text("{}")
    return folder


def trainer(tmp_path: Path, ngpus: int = 8, **kw) -> CollieFinetune:
    return CollieFinetune(model_folder(tmp_path), tmp_path / "out", launcher=launchers.local(ngpus=ngpus), **kw)


# --- options ---------------------------------------------------------------------------------------------------------


def test_whitelist_matches_lazyllm_defaults(tmp_path: Path) -> None:
    t = CollieFinetune(model_folder(tmp_path), tmp_path / "out", launcher=launchers.local(ngpus=0))
    assert t.options == {
        "batch_size": 64, "micro_batch_size": 4, "num_epochs": 3, "learning_rate": 5e-4,
        "dp_size": 8, "pp_size": 1, "tp_size": 1, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "modules_to_save": [],
        "prompt_template_name": "alpaca",
    }  # fmt: skip
    assert (t.model_name, t.cp_files) == ("LLM", "tokeniz*")


def test_internlm2_gets_lazyllms_lora_modules(tmp_path: Path) -> None:
    t = CollieFinetune(model_folder(tmp_path, "internlm2"), tmp_path / "out", launcher=launchers.local(ngpus=0))
    assert t.options["lora_target_modules"] == ["wo", "wqkv"]
    assert t.options["modules_to_save"] == ["tok_embeddings", "output"]


def test_lazyllm_string_lists_and_aliases(tmp_path: Path) -> None:
    t = trainer(tmp_path, lora_target_modules="[q_proj,v_proj]", modules_to_save="[embed_tokens,lm_head]", ddp=8)
    assert t.options["lora_target_modules"] == ["q_proj", "v_proj"]
    assert t.options["modules_to_save"] == ["embed_tokens", "lm_head"]
    assert t.options["dp_size"] == 8


def test_unknown_option_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(UnknownOptionError, match=r"unknown option 'lora_rnak' for collie; did you mean 'lora_r'"):
        trainer(tmp_path, lora_rnak=4)
    with pytest.raises(UnknownOptionError, match=r"'micro_batchsize'.*did you mean 'micro_batch_size'"):
        trainer(tmp_path / "b", micro_batchsize=2)


def test_all_problems_at_once_and_types(tmp_path: Path) -> None:
    with pytest.raises(OptionsError) as err:
        trainer(tmp_path, learning_rate="fast", dp_size=0)
    assert len(err.value.problems) == 2


def test_tp_with_lora_and_batch_divisibility(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="tensor parallelism"):
        trainer(tmp_path, tp_size=2, dp_size=4)
    with pytest.raises(OptionsError, match=r"batch_size=60 must be a multiple of .* 4 x 8 = 32"):
        trainer(tmp_path / "b", batch_size=60)


def test_unsupported_model_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no implementation of model_type 'qwen2'.*supports llama"):
        CollieFinetune(model_folder(tmp_path, "qwen2"), tmp_path / "out", launcher=launchers.local(ngpus=0))


def test_prompt_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such template \(known: alpaca"):
        trainer(tmp_path, prompt_template_name="nope")
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"prompt_input": "{instruction}|{input}|", "prompt_no_input": "{instruction}|"}))
    t = trainer(tmp_path / "b", prompt_template_name=str(custom))
    assert t.options["prompt_template_name"] == str(custom)


def test_model_name_and_cp_files_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_name"):
        CollieFinetune(model_folder(tmp_path), tmp_path / "out", model_name="a/b", launcher=launchers.local(ngpus=0))
    with pytest.raises(ConfigError, match="cp_files"):
        CollieFinetune(model_folder(tmp_path / "x"), tmp_path / "out", cp_files=["a"], launcher=launchers.local())


# --- GPUs and world size ---------------------------------------------------------------------------------------------


def test_no_gpu_is_a_clear_error_before_anything_is_written(tmp_path: Path, gpus, alpaca_file: Path) -> None:
    gpus(0)
    t = CollieFinetune(model_folder(tmp_path), tmp_path / "out", dp_size=1, launcher=launchers.local(ngpus=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the launcher's own "no GPU found" warning
        with pytest.raises(CollieNeedsGpuError, match=r"(?s)needs NVIDIA GPUs.*cannot train on CPU.*NCCL"):
            t.plan(alpaca_file)
        with pytest.raises(CollieNeedsGpuError):
            t(alpaca_file)
    assert not (tmp_path / "out").exists()


def test_world_size_must_match(tmp_path: Path, gpus, alpaca_file: Path) -> None:
    gpus(8)
    with pytest.raises(ConfigError, match=r"8 x 1 x 1 = 8, but the launcher runs 2 process\(es\).*dp_size=2"):
        trainer(tmp_path / "a", ngpus=2).plan(alpaca_file)
    assert trainer(tmp_path / "b", ngpus=2, dp_size=2).plan(alpaca_file).topology.world_size == 2
    plan = trainer(tmp_path / "c", ngpus=4, dp_size=2, pp_size=2, batch_size=8).plan(alpaca_file)
    config = json.loads(plan.files[0].content)
    assert config["collie"]["pp_size"] == 2 and config["world_size"] == 4
    with pytest.raises(ConfigError, match=r"2 x 2 x 1 = 4, but the launcher runs 8"):
        trainer(tmp_path / "d", ngpus=8, dp_size=2, pp_size=2, batch_size=8).plan(alpaca_file)


def test_more_processes_than_gpus(tmp_path: Path, gpus, alpaca_file: Path) -> None:
    gpus(2)
    launcher = launchers.local(ngpus=2, nproc=4)
    t = CollieFinetune(model_folder(tmp_path), tmp_path / "out", dp_size=4, batch_size=16, launcher=launcher)
    with pytest.raises(ConfigError, match="one GPU per process"):
        t.plan(alpaca_file)


# --- the plan --------------------------------------------------------------------------------------------------------


def test_plan_argv_and_rendered_config(tmp_path: Path, gpus, alpaca_file: Path) -> None:
    gpus(8)
    base = model_folder(tmp_path)
    t = CollieFinetune(base, tmp_path / "out dir", model_name="my-llm", cp_files="*.model",
                       launcher=launchers.local(ngpus=8), learning_rate=1e-4, lora_r=4)  # fmt: skip
    plan = t.plan(alpaca_file)
    python = envs.python_for("collie")
    config_path = plan.run_dir / "collie_config.json"
    train, merge = plan.steps
    assert train.name == "train" and train.distributed is True
    assert list(train.argv) == [python, script("collie_train.py"), "--config", str(config_path)]
    assert train.log == plan.run_dir / "logs" / "my-llm_train.log"
    lora, merged = tmp_path / "out dir" / "lazyllm_lora", tmp_path / "out dir" / "lazyllm_merge"
    assert list(merge.argv) == [
        python, script("merge_lora.py"), "--base", str(base.resolve()), "--adapter", str(lora),
        "--output", str(merged), "--cp-files", "*.model",
    ]  # fmt: skip
    assert merge.distributed is False
    assert plan.result == merged
    assert [f.path for f in plan.files] == [config_path]
    config = json.loads(plan.files[0].content)
    template = json.loads((Path(script("collie_train.py")).parent / "templates" / "alpaca.json").read_text())
    assert config == {
        "model_name": "my-llm",
        "base_model": str(base.resolve()),
        "model_type": "llama",
        "data_files": [str(alpaca_file.resolve())],
        "output_dir": str(lora),
        "trainer_log": str(lora / "trainer_log.jsonl"),
        "prompt_template": template,
        "learning_rate": 1e-4,
        "trust_remote_code": False,  # a llama folder without auto_map (internlm2's: tests/test_remote_code.py)
        "collie": {
            "dp_size": 8, "pp_size": 1, "tp_size": 1, "train_epochs": 3, "train_micro_batch_size": 4,
            "gradient_accumulation_steps": 2, "seed": 42,
        },
        "lora": {
            "r": 4, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "modules_to_save": None,
        },
        "world_size": 8,
        "precision": "bf16",  # H100: the plan decides, not torch.cuda.is_bf16_supported()
    }  # fmt: skip
    text = str(plan)
    assert "collie_config.json" in text and '"gradient_accumulation_steps": 2' in text
    assert not (tmp_path / "out dir").exists(), "plan() writes nothing"


def test_data_path_option_is_used_without_data(tmp_path: Path, gpus, alpaca_file: Path) -> None:
    gpus(1)
    t = trainer(tmp_path, ngpus=1, dp_size=1, batch_size=8, data_path=str(alpaca_file))
    plan = t.plan()
    assert json.loads(plan.files[0].content)["data_files"] == [str(alpaca_file.resolve())]


def test_plan_for_slurm_without_local_gpus(tmp_path: Path, gpus, alpaca_file: Path) -> None:
    gpus(0)  # a CPU login node submitting to GPU nodes
    try:
        launcher = launchers.slurm(ngpus=4, nnodes=2)
    except TypeError as exc:  # pragma: no cover - depends on the SLURM launcher's signature
        pytest.skip(f"launchers.slurm signature: {exc}")
    topo = launcher.topology()
    if topo.gpus_per_node != 4:  # pragma: no cover
        pytest.skip(f"slurm topology {topo}")
    t = CollieFinetune(model_folder(tmp_path), tmp_path / "out", launcher=launcher, batch_size=32)
    plan = t.plan(alpaca_file)
    assert json.loads(plan.files[0].content)["world_size"] == topo.world_size == 8


def test_chatglm3_is_refused_with_the_reason(tmp_path: Path, alpaca_file: Path) -> None:
    folder = tmp_path / "chatglm3-6b"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "configs" / "chatglm3-6b.json", folder / "config.json")
    with pytest.raises(ConfigError, match=r"ChatGLM2/ChatGLM3/GLM-4 .*ChatGLM-1 model.*finetune.llamafactory"):
        CollieFinetune(folder, tmp_path / "out")


def test_every_model_type_has_defaults() -> None:
    collie_models = {"llama", "internlm", "internlm2", "moss", "moss_moon", "chatglm", "chatglm2"}
    assert set(MODEL_DEFAULTS) == collie_models
    assert all(d["lora_target_modules"] for d in MODEL_DEFAULTS.values())


# --- the real environment and scripts (CPU) -------------------------------------------------------------------------


def collie_python() -> str:
    """The collie env's Python; skips (fails when LAZYTUNE_REQUIRE_ENVS names collie or is 1) if not installed."""
    if envs.read_stamp("collie") is None and not os.environ.get("LAZYTUNE_COLLIE_PYTHON"):
        wanted = os.environ.get("LAZYTUNE_REQUIRE_ENVS", "").replace(",", " ").split()
        message = "the collie environment is not installed (lazytune env install collie)"
        if wanted == ["1"] or "collie" in wanted:
            pytest.fail(message)
        pytest.skip(message)
    return envs.python_for("collie")


@pytest.fixture(scope="module")
def collie_tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama made with the collie env's transformers 4.40.2 (tokenizers saved by 5.x don't load in 4.x)."""
    from tests.helpers.models import tiny_model

    return tiny_model(tmp_path_factory.getbasetemp() / "models", "llama", python=collie_python(),
                      name="tiny-llama-collie-env")  # fmt: skip


@pytest.mark.slow
def test_import_collie_in_its_env() -> None:
    python = collie_python()
    code = "import collie, transformers, peft; print(collie.__file__, transformers.__version__, peft.__version__)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].split()[1:] == ["4.40.2", "0.10.0"]  # deepspeed logs to stdout first


@pytest.mark.slow
def test_training_script_prepares_on_cpu_and_refuses_to_train(
    tmp_path: Path, gpus, alpaca_file: Path, collie_tiny_llama: Path
) -> None:
    gpus(8)
    t = CollieFinetune(collie_tiny_llama, tmp_path / "out", launcher=launchers.local(ngpus=8))
    plan = t.plan(alpaca_file)
    plan.write_files()
    train = list(plan.steps[0].argv)
    assert train[0] == collie_python()
    proc = subprocess.run([*train, "--prepare-only"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 examples" in proc.stdout and "dp=8 pp=1 tp=1" in proc.stdout
    # without CUDA the script stops with a clear message before CoLLiE starts NCCL
    proc = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "CoLLiE needs NVIDIA GPUs" in proc.stderr


ADAPTER_CODE = r"""
import sys, torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.5)
model.save_pretrained(sys.argv[2], safe_serialization=False)  # adapter_model.bin, as CoLLiE's save_peft writes
"""

COMPARE_CODE = r"""
import sys
from safetensors.torch import load_file
base, merged = load_file(sys.argv[1]), load_file(sys.argv[2])
key = "model.layers.0.self_attn.q_proj.weight"
print((base[key] - merged[key]).abs().max().item())
"""


@pytest.mark.slow
def test_merge_step_in_the_collie_env(tmp_path: Path, gpus, alpaca_file: Path, collie_tiny_llama: Path) -> None:
    """The plan's merge step (merge_lora.py, shared with alpacalora) on a peft 0.10 adapter, with the env's Python."""
    gpus(1)
    t = CollieFinetune(collie_tiny_llama, tmp_path / "out", launcher=launchers.local(ngpus=1), dp_size=1, batch_size=4)
    plan = t.plan(alpaca_file)
    python = collie_python()
    subprocess.run([python, "-c", ADAPTER_CODE, str(collie_tiny_llama), str(plan.target.lora)], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    proc = subprocess.run(list(plan.steps[1].argv), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = plan.target.merge
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    diff = subprocess.run([python, "-c", COMPARE_CODE, str(collie_tiny_llama / "model.safetensors"),
                           str(merged / "model.safetensors")], capture_output=True, text=True, check=True)  # fmt: skip
    assert float(diff.stdout) > 1e-3, "the LoRA weights were merged into the base"


@pytest.mark.gpu
def test_collie_trains_on_gpu(tmp_path: Path, alpaca_file: Path, collie_tiny_llama: Path) -> None:
    """A real CoLLiE LoRA fine-tune + merge on one NVIDIA GPU. NOT YET RUN: no GPU machine has been available."""
    if not envs.has_gpu():
        pytest.skip("needs an NVIDIA GPU: CoLLiE cannot train on CPU")
    t = CollieFinetune(collie_tiny_llama, tmp_path / "out", launcher=launchers.local(ngpus=1), dp_size=1,
                       batch_size=4, micro_batch_size=2, num_epochs=2, learning_rate=1e-3)  # fmt: skip
    merged = Path(t(alpaca_file))
    lora = tmp_path / "out" / "lazyllm_lora"
    assert (lora / "adapter_config.json").is_file()
    losses = [json.loads(line)["loss"] for line in (lora / "trainer_log.jsonl").read_text().splitlines()]
    assert len(losses) == 12 // 2 * 2 and all(x == x for x in losses)
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
