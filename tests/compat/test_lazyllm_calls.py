"""Every finetune / launcher call in LazyLLM's tests, docs and examples (LazyAGI/LazyLLM at 9d28284), ported to
lazytune, each with its expected outcome.

A `TrainableModule(base, target).finetune_method(X, **kw).trainset(data).update()` becomes `X(base, target, **kw)(data)`
(what TrainableModule does with them); `finetune_method((X, {...}))` likewise. Real backends are planned (every file
and argv is built and checked; nothing that needs a GPU runs); the dummy runs for real. Rows whose expected outcome
is an error are calls LazyLLM accepts but lazytune refuses on purpose (the README's "Coming from LazyLLM" lists them).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import launchers
from lazytune import ConfigError, ModelNotFoundError, finetune
from lazytune.plan import Plan

from .conftest import LazyllmMachine, add_slurm


@dataclass(frozen=True)
class Case:
    source: str  # LazyLLM file:line the call comes from (several: the same call in several places)
    call: Callable[[LazyllmMachine], Any]  # the port; returns what `check` looks at
    error: type[BaseException] | None = None  # expected error class (None: it works)
    match: str = ""  # regex the error message must match
    check: Callable[[Any], Any] | None = None  # more assertions on the result


def plan(trainer: Any, data: Any = None) -> Plan:
    return trainer.plan(data)


def yaml_file(p: Plan, name: str) -> dict:
    return yaml.safe_load(next(f for f in p.files if f.path.name == name).content)


def quiet_dummy(*args: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return finetune.dummy(*args, **kw)


def ran(result: Any) -> None:
    path = Path(result)
    assert path.name == "lazyllm_merge" and (path.parent / "lazytune_run.json").is_file()


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- tests/advanced_tests/Finetune/test_finetune.py
    "auto-llm": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:48 TrainableModule('qwen1.5-0.5b-chat', save).trainset(...)",
        lambda m: finetune.auto("qwen1.5-0.5b-chat", m.target("auto-llm")),
        check=lambda t: (t.backend == "llamafactory", plan(t, "alpaca/alpaca_data_zh_128.json")),
    ),
    "auto-vlm": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:57 TrainableModule('qwen2.5-vl-3b-instruct', save)",
        lambda m: finetune.auto("qwen2.5-vl-3b-instruct", m.target("auto-vlm")),
        check=lambda t: t.backend == "llamafactory",
    ),
    "auto-embedding": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:66 TrainableModule('bge-m3', save).trainset(embedding.json)",
        lambda m: finetune.auto("bge-m3", m.target("auto-embed")),
        check=lambda t: (t.backend == "flagembedding" and t.options["model_kind"] == "embed",
                         plan(t, "sft_embeding/embedding.json")),
    ),
    "auto-rerank": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:75 TrainableModule('bge-reranker-large', save)",
        lambda m: finetune.auto("bge-reranker-large", m.target("auto-rerank")),
        check=lambda t: (t.options["model_kind"] == "rerank",
                         t.options["query_max_len"] + t.options["passage_max_len"] <= 512,
                         plan(t, "sft_embeding/rerank.jsonl")),
    ),
    "llamafactory-pipeline": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:87 finetune.llamafactory(base_model=..., target_path=...)",
        lambda m: plan(finetune.llamafactory(base_model="qwen1.5-0.5b-chat", target_path=m.target("lf")),
                       "alpaca/alpaca_data_zh_128.json"),
        check=lambda p: yaml_file(p, "train.yaml")["template"] == "qwen",
    ),
    "llamafactory-vlm-dict": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:103 finetune_method((llamafactory, {learning_rate, "
        "cutoff_len, max_samples, val_size, num_train_epochs, per_device_train_batch_size}))",
        lambda m: finetune.llamafactory("qwen2.5-vl-3b-instruct", m.target("vlm"), learning_rate=1e-4,
                                        cutoff_len=5120, max_samples=20000, val_size=0.01, num_train_epochs=1.0,
                                        per_device_train_batch_size=4),
        check=lambda t: t.options["cutoff_len"] == 5120,
    ),
    "flagembedding-embed": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:124 finetune_method(finetune.flagembedding) on bge-m3",
        lambda m: plan(finetune.flagembedding("bge-m3", m.target("fe")), "sft_embeding/embedding.json"),
    ),
    "flagembedding-rerank": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:138 finetune_method(finetune.flagembedding) on "
        "bge-reranker-large",
        lambda m: plan(finetune.flagembedding("bge-reranker-large", m.target("fr")), "sft_embeding/rerank.jsonl"),
    ),
    "easyr1": Case(
        "tests/advanced_tests/Finetune/test_finetune.py:154 finetune_method((lazyllm.finetune.easyr1, {..., "
        "'launcher': launchers.remote(ngpus=2, sync=True)}))",
        lambda m: finetune.easyr1, error=AttributeError, match="no lazytune backend",
    ),
    # ----------------------------------------------------------- tests/advanced_tests/Finetune/test_finetune_full.py
    "alpacalora-empty-target": Case(
        "tests/advanced_tests/Finetune/test_finetune_full.py:16 finetune.alpacalora(base_model='internlm2-chat-7b', "
        "target_path='')",
        lambda m: finetune.alpacalora(base_model="internlm2-chat-7b", target_path=""),
        error=ConfigError, match="target_path must be a folder path",
    ),
    "alpacalora-internlm2": Case(
        "tests/advanced_tests/Finetune/test_finetune_full.py:16 (with a target folder)",
        lambda m: plan(finetune.alpacalora(base_model="internlm2-chat-7b", target_path=m.target("al"),
                                           val_set_size=2), "train.json"),
        check=lambda p: "--trust-remote-code" in p.steps[1].argv and "wqkv,wo" in p.steps[0].argv,
    ),
    "collie-empty-target": Case(
        "tests/advanced_tests/Finetune/test_finetune_full.py:21 finetune.collie(base_model='internlm2-chat-7b', "
        "target_path='')",
        lambda m: finetune.collie(base_model="internlm2-chat-7b", target_path=""),
        error=ConfigError, match="target_path must be a folder path",
    ),
    "collie-internlm2": Case(
        "tests/advanced_tests/Finetune/test_finetune_full.py:21 (with a target folder)",
        lambda m: plan(finetune.collie("internlm2-chat-7b", m.target("co"), launcher=launchers.local(ngpus=8)),
                       "train.json"),
        check=lambda p: "--trust-remote-code" in p.steps[1].argv,
    ),
    "auto-sco": Case(
        "tests/advanced_tests/Finetune/test_finetune_full.py:26 finetune.auto('internlm2-chat-7b', '', "
        "launcher=launchers.sco(ngpus=1))",
        lambda m: finetune.auto("internlm2-chat-7b", "", launcher=launchers.sco(ngpus=1)),
        error=launchers.LauncherArgumentError, match="SenseCore.*not supported",
    ),
    # ------------------------------------------------------------------------- tests/basic_tests/Modules/test_module.py
    "dummy-trainable-module": Case(
        "tests/basic_tests/Modules/test_module.py:102 TrainableModule(base, target, trust_remote_code=False)"
        ".finetune_method(lazyllm.finetune.dummy).trainset(data_path)",
        lambda m: quiet_dummy("internlm2-chat-7b-not-here", m.target("dummy"), trust_remote_code=False)("train.json"),
        check=ran,
    ),
    "dummy-trainset-empty": Case(
        "docs/lazyllm-skill/assets/basic/modulebase.md:69 finetune_method(lazyllm.finetune.dummy).trainset('')",
        lambda m: quiet_dummy()(""),
        check=ran,
    ),
    # ----------------------------------------------------------------------------- tests/basic_tests/test_launcher.py
    "launcher-slurm": Case(
        "tests/basic_tests/test_launcher.py:10 launchers.slurm(partition='pat_rd', nnode=1, nproc=1, ngpus=1, "
        "sync=False); also lazyllm/docs/launcher.py:177",
        lambda m: launchers.slurm(partition="pat_rd", nnode=1, nproc=1, ngpus=1, sync=False),
        check=lambda launcher: launcher.resources.partition == "pat_rd" and not launcher.sync,
    ),
    "launcher-empty": Case(
        "tests/basic_tests/test_launcher.py:20 launchers.empty(); also lazyllm/docs/launcher.py:137",
        lambda m: launchers.empty(),
        check=lambda launcher: isinstance(launcher, launchers.LocalLauncher),
    ),
    "launcher-sco": Case(
        "tests/basic_tests/test_launcher.py:24 launchers.sco(partition='pat_rd', nnode=1, nproc=1, ngpus=1, "
        "sync=False); also lazyllm/docs/launcher.py:290",
        lambda m: launchers.sco(partition="pat_rd", nnode=1, nproc=1, ngpus=1, sync=False),
        error=launchers.LauncherArgumentError, match="SenseCore",
    ),
    "launcher-k8s": Case(
        "tests/basic_tests/test_launcher.py:34 launchers.k8s(kube_config_path=..., namespace='lazyllm', host=...)",
        lambda m: launchers.k8s(kube_config_path="~/.kube/config", namespace="lazyllm", host="myapp.lazyllm.com"),
        error=launchers.LauncherArgumentError, match="Kubernetes",
    ),
    "launcher-remote-empty": Case(
        "tests/basic_tests/test_launcher.py:46 LAZYLLM_DEFAULT_LAUNCHER=empty; launchers.remote(sync=False)",
        lambda m: launchers.remote(launcher="empty", sync=False),
        check=lambda launcher: isinstance(launcher, launchers.LocalLauncher) and not launcher.sync,
    ),
    "launcher-remote-slurm": Case(
        "tests/basic_tests/test_launcher.py:53 LAZYLLM_DEFAULT_LAUNCHER=slurm; launchers.remote(sync=False)",
        lambda m: launchers.remote(launcher="slurm", sync=False),
        check=lambda launcher: type(launcher).__name__ == "SlurmLauncher" and not launcher.sync,
    ),
    "launcher-remote-sco": Case(
        "tests/basic_tests/test_launcher.py:60 LAZYLLM_DEFAULT_LAUNCHER=sco; launchers.remote(sync=False)",
        lambda m: launchers.remote(launcher="sco", sync=False),
        error=ValueError, match="not a launcher this version knows",
    ),
    "launcher-remote-k8s": Case(
        "tests/basic_tests/test_launcher.py:67 LAZYLLM_DEFAULT_LAUNCHER=k8s; launchers.remote(sync=True)",
        lambda m: launchers.remote(launcher="k8s", sync=True),
        error=ValueError, match="not a launcher this version knows",
    ),
    "launcher-uncalled": Case(
        "tests/basic_tests/Common/test_common.py:243 launcher=lazyllm.launchers.empty (uncalled); also "
        "docs/en/Best Practice/flow.md:45",
        lambda m: quiet_dummy("base", m.target("uncalled"), launcher=launchers.empty)(),
        check=ran,
    ),
    "launcher-slurm-uncalled": Case(
        "README.md:244 lazyllm.demo.test_cmd(launcher=launchers.slurm)",
        lambda m: plan(quiet_dummy("base", m.target("uncalled-slurm"), launcher=launchers.slurm)),
        check=lambda p: p.topology.nnodes == 1,
    ),
    "launcher-remote-ngpus": Case(
        "lazyllm/docs/launcher.py:322 launchers.remote(ngpus=1); docs/lazyllm-skill/assets/basic/launcher.md:22 "
        "launchers.remote(ngpus=4)",
        lambda m: launchers.remote(ngpus=4),
        check=lambda launcher: launcher.topology().gpus_per_node == 4,
    ),
    # ------------------------------------------------------------------------------------------------------ docs
    "doc-auto": Case(
        "docs/en/Best Practice/LocalModel.md:55 TrainableModule('qwen2-1.5b', target_path=...)"
        ".finetune_method(lazyllm.finetune.auto); docs/lazyllm-skill/references/finetune.md:38; "
        "docs/lazyllm-skill/scripts/basic_finetune.py:5; docs/en/Learn/ai_coding.md:3491",
        lambda m: plan(finetune.auto("qwen2-1.5b", m.target("doc-auto")), "train.json"),
    ),
    "doc-llamafactory-kw": Case(
        "docs/en/Best Practice/LocalModel.md:61 finetune_method(lazyllm.finetune.llamafactory, learning_rate=1e-4, "
        "num_train_epochs=3); docs/lazyllm-skill/references/finetune.md:53; scripts/basic_finetune.py:11",
        lambda m: plan(finetune.llamafactory("qwen2-1.5b", m.target("doc-lf"), learning_rate=1e-4,
                                             num_train_epochs=3), "train.json"),
        check=lambda p: yaml_file(p, "train.yaml")["num_train_epochs"] == 3,
    ),
    "doc-llamafactory-more-kw": Case(
        "docs/en/Best Practice/LocalModel.md:82 llamafactory(learning_rate, num_train_epochs, "
        "per_device_train_batch_size=4, max_samples=1000, val_size=0.1)",
        lambda m: plan(finetune.llamafactory("qwen2-1.5b", m.target("doc-lf2"), learning_rate=1e-4,
                                             num_train_epochs=3, per_device_train_batch_size=4, max_samples=1000,
                                             val_size=0.1), "train.json"),
        check=lambda p: yaml_file(p, "train.yaml")["max_samples"] == 1000,
    ),
    "doc-flagembedding-bge-large-zh": Case(
        "docs/en/Best Practice/LocalModel.md:272 TrainableModule('bge-large-zh-v1.5')"
        ".finetune_method(lazyllm.finetune.flagembedding); docs/lazyllm-skill/assets/basic/model.md:163",
        lambda m: plan(finetune.flagembedding("bge-large-zh-v1.5", m.target("doc-fe")),
                       "sft_embeding/embedding.json"),
    ),
    "doc-ai-coding-llamafactory": Case(
        "docs/en/Learn/ai_coding.md:3499 finetune_method((finetune.llamafactory, {learning_rate, num_train_epochs, "
        "..., 'template': 'alpaca', 'dataset_dir': DATASET_DIR, 'dataset': 'tech_qa', 'warmup_ratio': 0.1, "
        "'fp16': True, 'overwrite_output_dir': True, ...}))",
        lambda m: _ai_coding(m),
        check=lambda p: yaml_file(p, "train.yaml")["dataset"] == "tech_qa",
    ),
    "doc-launcher-md": Case(
        "docs/lazyllm-skill/assets/basic/launcher.md:25 TrainableModule('qwen2-1.5b').finetune_method("
        "lazyllm.finetune.llamafactory, launcher=launchers.remote(ngpus=4))",
        lambda m: plan(finetune.llamafactory("qwen2-1.5b", m.target("doc-l4"), launcher=launchers.remote(ngpus=4)),
                       "train.json"),
        check=lambda p: p.topology.gpus_per_node == 4,
    ),
    "doc-dummy-option": Case(
        "docs/lazyllm-skill/assets/basic/modules.md:120 TrainableModule('b1', 't').finetune_method(finetune.dummy, "
        "**dict(a=lazyllm.Option(['f1', 'f2']))); lazyllm/docs/module.py:1414",
        lambda m: quiet_dummy("b1", "t", a=["f1", "f2"])(),
        check=ran,
    ),
    "doc-llamafactory-sco": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_example.md:18 finetune_method((finetune.llamafactory, {..., "
        "'launcher': launchers.sco(ngpus=8)})); examples/distill_deepseek_r1.py:107 (launchers.sco(nnode=1, "
        "nproc=8, ngpus=8))",
        lambda m: finetune.llamafactory("internlm2-chat-7b", m.target("sco"), learning_rate=1e-4,
                                        launcher=launchers.sco(ngpus=8)),
        error=launchers.LauncherArgumentError, match="SenseCore",
    ),
    "doc-flagembedding-remote": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_example.md:60 finetune_method((lazyllm.finetune.flagembedding, "
        "{'launcher': lazyllm.launchers.remote(nnode=1, nproc=1, ngpus=4), 'per_device_train_batch_size': 16, "
        "'num_train_epochs': 2}))",
        lambda m: plan(finetune.flagembedding("bge-large-zh-v1.5", m.target("doc-fe4"),
                                              launcher=launchers.remote(nnode=1, nproc=1, ngpus=4),
                                              per_device_train_batch_size=16, num_train_epochs=2),
                       "sft_embeding/embedding.json"),
    ),
    "doc-alpacalora-placeholder": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_framework.md:43 finetune.alpacalora('path/to/base/model', "
        "'path/to/target'); lazyllm/docs/components.py:181,209",
        lambda m: finetune.alpacalora("path/to/base/model", "path/to/target"),
        error=ModelNotFoundError, match="never downloads",
    ),
    "doc-collie-placeholder": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_framework.md:77 finetune.collie('path/to/base/model', "
        "'path/to/target'); lazyllm/docs/components.py:276",
        lambda m: finetune.collie("path/to/base/model", "path/to/target"),
        error=ModelNotFoundError, match="never downloads",
    ),
    "doc-llamafactory-internlm2": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_framework.md:127 finetune.llamafactory('internlm2-chat-7b', "
        "'path/to/target'); lazyllm/docs/components.py:386",
        lambda m: plan(finetune.llamafactory("internlm2-chat-7b", "path/to/target"), "train.json"),
        check=lambda p: (yaml_file(p, "train.yaml")["trust_remote_code"] is True,
                         yaml_file(p, "export.yaml")["trust_remote_code"] is True,
                         yaml_file(p, "train.yaml")["template"] == "intern2"),
    ),
    "doc-FlagembeddingFinetune": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_framework.md:187 finetune.FlagembeddingFinetune('bge-m3', "
        "'path/to/target'); lazyllm/docs/components.py:550",
        lambda m: plan(finetune.FlagembeddingFinetune("bge-m3", "path/to/target"), "sft_embeding/embedding.json"),
    ),
    "doc-auto-internlm2": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_framework.md:210 finetune.auto('internlm2-chat-7b', "
        "'path/to/target'); lazyllm/docs/components.py:591",
        lambda m: plan(finetune.auto("internlm2-chat-7b", "path/to/target"), "train.json"),
        check=lambda p: yaml_file(p, "train.yaml")["trust_remote_code"] is True,
    ),
    "doc-DummyFinetune": Case(
        "docs/lazyllm-skill/assets/finetune/finetune_framework.md:228 DummyFinetune(base_model='example-base', "
        "target_path='example-target', launcher=launchers.local(), custom_arg='custom_value'); "
        "lazyllm/docs/components.py:3766,3807",
        lambda m: quiet_dummy(base_model="example-base", target_path="example-target", launcher=launchers.local(),
                              custom_arg="custom_value")(),
        check=ran,
    ),
    "auto-source-model-type": Case(
        "lazyllm/components/auto/autofinetune.py:33 AutoFinetune(base_model, target_path, source=None, "
        "merge_path=None, batch_size=32, lora_r=8, model_type=None, launcher=None)",
        lambda m: finetune.auto("bge-reranker-large", m.target("src"), source="huggingface", model_type="rerank",
                                batch_size=32, lora_r=8),
        check=lambda t: t.backend == "flagembedding",
    ),
}  # fmt: skip


def _ai_coding(m: LazyllmMachine) -> Plan:
    """The user's own dataset folder with a 'tech_qa' entry, as the tutorial sets up."""
    import json

    folder = m.root / "tech_data"
    folder.mkdir()
    (folder / "tech_qa.json").write_text((m.data / "train.json").read_text())
    (folder / "dataset_info.json").write_text(json.dumps({"tech_qa": {"file_name": "tech_qa.json"}}))
    trainer = finetune.llamafactory(
        "qwen2-1.5b", m.target("ai-coding"), learning_rate=2e-4, num_train_epochs=3, per_device_train_batch_size=4,
        gradient_accumulation_steps=4, cutoff_len=1024, lora_r=8, lora_alpha=16, save_steps=100, eval_steps=100,
        val_size=0.1, template="alpaca", dataset_dir=str(folder), dataset="tech_qa", warmup_ratio=0.1,
        lr_scheduler_type="cosine", fp16=True, logging_steps=10, plot_loss=True, overwrite_output_dir=True,
    )  # fmt: skip
    return trainer.plan()


@pytest.mark.parametrize("name", list(CASES))
def test_lazyllm_call(name: str, machine: LazyllmMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    if name == "launcher-remote-slurm":
        add_slurm(machine, monkeypatch)
    if case.error is not None:
        with pytest.raises(case.error, match=case.match):
            case.call(machine)
        return
    try:
        result = case.call(machine)
    except ConfigError as exc:
        if re.search(r"is not installed", str(exc)):
            pytest.skip(f"{name}: {exc}")
        raise
    if case.check is not None:
        outcome = case.check(result)
        assert all(outcome) if isinstance(outcome, tuple) else outcome in (None, True), (name, outcome)


def test_every_row_cites_a_lazyllm_file() -> None:
    for name, case in CASES.items():
        assert re.match(r"(tests|docs|examples|lazyllm|README)", case.source), name
