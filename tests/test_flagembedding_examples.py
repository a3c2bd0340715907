"""FlagEmbedding's own example commands (examples/finetune/**, tests/fixtures/upstream/flagembedding) vs lazytune.

Every example is translated to lazytune keywords. The encoder-only ones are planned (on a stand-in 2-GPU topology,
as the examples run with 2 GPUs) and lazytune's argv and the example's argv (extracted by bash from the script
itself) are both read by FlagEmbedding's own parser: every argument equal, except the documented differences
below. The decoder-only and bge-m3 ones are refused at plan time with the reason. Then one embedder is trained for
real by hand (`python -m FlagEmbedding...`, FlagEmbedding's defaults) and through lazytune with the translated
keywords: the same weights.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import launchers
from lazytune.backends.flagembedding import FlagembeddingFinetune
from lazytune.backends.flagembedding import backend as fe_backend
from lazytune.backends.flagembedding.args import FLAGEMBEDDING_DEFAULTS, MODULES
from lazytune.errors import ConfigError, UnknownOptionError
from lazytune.resources import configs_dir
from tests.helpers.embed import fe_python, tiny_berts, write_triples

EXAMPLES = Path(__file__).parent / "fixtures" / "upstream" / "flagembedding"
PARSE = Path(__file__).parent / "helpers" / "fe_parse.py"

#: Arguments that differ by design: paths (model, data, output, caches, the DeepSpeed file: compared by content),
#: `--overwrite_output_dir` (gone in transformers 5; FlagEmbedding refuses a non-empty output_dir either way) and
#: transformers 5's `warmup_ratio` -> `warmup_steps` (a float < 1 is a ratio there).
PATHS = {"model_name_or_path", "output_dir", "train_data", "cache_dir", "cache_path", "deepspeed"}

#: config.json of the examples' models (what detect_kind reads).
MODELS: dict[str, dict[str, Any]] = {
    "bge-large-en-v1.5": {"model_type": "bert", "architectures": ["BertModel"], "max_position_embeddings": 512},
    "bge-m3": {"model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"], "max_position_embeddings": 8194,
               "pad_token_id": 1},
    "bge-reranker-base": {"model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"],
                          "max_position_embeddings": 514, "pad_token_id": 1},
    "bge-multilingual-gemma2": {"model_type": "gemma2", "architectures": ["Gemma2Model"]},
    "bge-en-icl": {"model_type": "mistral", "architectures": ["MistralModel"]},
    "bge-reranker-v2-gemma": {"model_type": "gemma", "architectures": ["GemmaForCausalLM"]},
    "bge-reranker-v2-minicpm-layerwise": {"model_type": "minicpm", "architectures": ["LayerWiseMiniCPMForCausalLM"]},
}  # fmt: skip

EMBED_BASE = dict(
    train_group_size=8, query_max_len=512, passage_max_len=512, pad_to_multiple_of=8,
    query_instruction_for_retrieval="Represent this sentence for searching relevant passages: ",
    query_instruction_format="{}{}", knowledge_distillation=False, learning_rate=1e-5, fp16=True, num_train_epochs=4,
    per_device_train_batch_size=2, dataloader_drop_last=True, warmup_ratio=0.1, gradient_checkpointing=True,
    deepspeed="stage0", logging_steps=1, save_steps=1000, negatives_cross_device=True, temperature=0.02,
    sentence_pooling_method="cls", normalize_embeddings=True, kd_loss_type="kl_div",
    weight_decay=0.0,  # not in the example: FlagEmbedding's default, where LazyLLM's is 0.01
)  # fmt: skip
SAME_DATASET = dict(knowledge_distillation=True, same_dataset_within_batch=True, small_threshold=0, drop_threshold=0)
M3 = dict(unified_finetuning=True, use_self_distill=True, fix_encoder=False, self_distill_start_step=0)
DECODER = dict(sentence_pooling_method="last_token")  # any translation: the model alone is refused

#: example -> (model, lazytune keywords, None when it trains, else the words of the plan-time refusal)
TRANSLATIONS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "embedder__encoder_only__base.sh": ("bge-large-en-v1.5", EMBED_BASE, None),
    "embedder__encoder_only__base_same_dataset.sh": ("bge-large-en-v1.5", {**EMBED_BASE, **SAME_DATASET}, None),
    "embedder__encoder_only__m3.sh": ("bge-m3", {**EMBED_BASE, "kd_loss_type": "m3_kd_loss", **M3}, "bge-m3's unified"),
    "embedder__encoder_only__m3_same_dataset.sh": ("bge-m3", {**EMBED_BASE, **SAME_DATASET, **M3}, "bge-m3's unified"),
    "embedder__decoder_only__base.sh": ("bge-multilingual-gemma2", DECODER, "decoder-only model"),
    "embedder__decoder_only__base_same_dataset.sh": ("bge-multilingual-gemma2", DECODER, "decoder-only model"),
    "embedder__decoder_only__icl_same_dataset.sh": ("bge-en-icl", DECODER, "decoder-only model"),
    "reranker__decoder_only__base.sh": ("bge-reranker-v2-gemma", {}, "decoder-only model"),
    "reranker__decoder_only__layerwise.sh": ("bge-reranker-v2-minicpm-layerwise", {}, "decoder-only model"),
    "reranker__encoder_only__base.sh": ("bge-reranker-base", dict(
        train_group_size=8, query_max_len=256, passage_max_len=256, pad_to_multiple_of=8, knowledge_distillation=True,
        learning_rate=6e-5, fp16=True, num_train_epochs=4, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        dataloader_drop_last=True, warmup_ratio=0.1, gradient_checkpointing=True, weight_decay=0.01,
        deepspeed="stage0", logging_steps=1, save_steps=1000,
    ), None),
}  # fmt: skip


class TwoGpus(launchers.Launcher):
    """Plans as the examples run (2 GPUs on one node); only the topology is a stand-in, nothing is submitted."""

    def topology(self) -> launchers.Topology:
        return launchers.Topology(1, 2, 2, "NVIDIA A100-SXM4-80GB", 80.0)

    def submit(self, steps, name):  # pragma: no cover - never called here
        raise AssertionError("nothing may start")


def example_argv(script: Path) -> list[str]:
    """The command the example script runs, word for word, from bash itself (its own quoting and variables)."""
    text = re.sub(r"^echo \$cmd\s*$", "", script.read_text(encoding="utf-8"), flags=re.M)
    text = re.sub(r"^eval \$cmd\s*$", "eval \"set -- $cmd\"; printf '%s\\\\0' \"$@\"", text, flags=re.M)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/example", "HF_HUB_CACHE": "/hf-cache"}
    proc = subprocess.run(["bash", "-c", text], capture_output=True, text=True, env=env, timeout=60, check=True)
    return proc.stdout.split("\0")[:-1]


def fake_model(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(MODELS[name]))
    return folder


def distill_data(path: Path) -> Path:
    records = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}a", f"n{i}b"], "pos_scores": [1.0],
                "neg_scores": [0.1, 0.2]} for i in range(8)]  # fmt: skip
    return write_triples(path, records=records)


def test_every_example_has_a_translation() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.sh")) == sorted(TRANSLATIONS)


@pytest.mark.parametrize("name", [n for n, (_, _, refused) in TRANSLATIONS.items() if refused])
def test_examples_lazytune_does_not_run_are_refused_at_plan_time(name: str, tmp_path: Path) -> None:
    model, kw, words = TRANSLATIONS[name]
    with pytest.raises((ConfigError, UnknownOptionError)) as err:
        FlagembeddingFinetune(fake_model(tmp_path, model), tmp_path / "out", launcher=TwoGpus(), **kw)
    assert words in str(err.value)


def test_examples_parse_the_same_with_flagembedding_s_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = fe_python()
    real_versions = fe_backend.package_versions

    def with_deepspeed(py: str, names: tuple[str, ...]) -> dict[str, str | None]:
        return {**real_versions(py, names), "deepspeed": "0.16.4"}  # the examples use DeepSpeed; not installed here

    monkeypatch.setattr(fe_backend, "package_versions", with_deepspeed)
    data = distill_data(tmp_path / "data.jsonl")
    jobs, names = [], []
    for name, (model, kw, refused) in TRANSLATIONS.items():
        if refused:
            continue
        theirs = example_argv(EXAMPLES / name)
        assert theirs[:3] == ["torchrun", "--nproc_per_node", "2"] and theirs[3] == "-m"
        trainer = FlagembeddingFinetune(fake_model(tmp_path, model), tmp_path / name, launcher=TwoGpus(), **kw)
        plan = trainer.plan(data)
        ours = list(plan.steps[0].argv)
        ours = ours[ours.index("-m") :]
        assert ours[1] == theirs[4], name  # the same FlagEmbedding module
        ds = ours[ours.index("--deepspeed") + 1]
        example_ds = theirs[theirs.index("--deepspeed") + 1]  # ../../ds_stageN.json: FlagEmbedding's own file
        stage = Path(example_ds).name
        assert Path(ds).name == stage and json.loads(next(f.content for f in plan.files if f.path.name == stage)) == (
            json.loads((configs_dir() / "flagembedding" / stage).read_text()))
        jobs += [{"module": theirs[4], "argv": theirs[5:]}, {"module": ours[1], "argv": ours[2:]}]
        names.append(name)
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    proc = subprocess.run([python, str(PARSE), str(jobs_file)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    for i, name in enumerate(names):
        theirs, ours = parsed[2 * i], parsed[2 * i + 1]
        assert ours["unknown"] == [], (name, ours["unknown"])
        # transformers 5 has neither --overwrite_output_dir nor --warmup_ratio: lazytune passes --warmup_steps 0.1
        assert theirs["unknown"] == ["--overwrite_output_dir", "--warmup_ratio", "0.1"], (name, theirs["unknown"])
        assert ours["args"]["warmup_steps"] == 0.1 and theirs["args"]["warmup_steps"] == 0
        differ = {k: (theirs["args"][k], ours["args"].get(k)) for k in theirs["args"]
                  if k not in PATHS | {"warmup_steps"} and theirs["args"][k] != ours["args"].get(k)}  # fmt: skip
        assert differ == {}, (name, differ)
        assert ours["args"]["train_data"] == [str(data)] and ours["args"]["deepspeed"].endswith("ds_stage0.json")


def test_the_defaults_the_plan_notes_name_are_flagembedding_s(tmp_path: Path) -> None:
    """FLAGEMBEDDING_DEFAULTS (quoted in the plan notes) are what FlagEmbedding's parser fills in."""
    python = fe_python()
    required = ["--model_name_or_path", "m", "--train_data", "d", "--output_dir", "o"]
    jobs = [{"module": MODULES[kind], "argv": required} for kind in ("embed", "rerank")]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([python, str(PARSE), str(tmp_path / "jobs.json")], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    embed, rerank = (p["args"] for p in json.loads(proc.stdout.strip().splitlines()[-1]))
    for key, value in FLAGEMBEDDING_DEFAULTS.items():
        name = "warmup_steps" if key == "warmup_ratio" else key  # transformers 5: a float < 1 there is a ratio
        got = embed[name]
        assert got == value or (value is False and got is None), (key, got)
        if name in rerank and key != "query_instruction_for_retrieval":
            assert rerank[name] == embed[name], key


@pytest.mark.slow
def test_a_translated_example_trains_the_same_weights_as_by_hand(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """FlagEmbedding run by hand (its defaults, example style) vs lazytune with the translated keywords."""
    python = fe_python()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # both runs: the same threads, the same sums
    model = tiny_berts(tmp_path / "models")[0]
    data = write_triples(tmp_path / "train.jsonl", 8)
    by_hand = tmp_path / "by-hand"
    argv = [python, "-m", "FlagEmbedding.finetune.embedder.encoder_only.base", "--model_name_or_path", str(model),
            "--train_data", str(data), "--output_dir", str(by_hand), "--train_group_size", "4",
            "--query_max_len", "32", "--passage_max_len", "32", "--learning_rate", "1e-3", "--num_train_epochs", "1",
            "--per_device_train_batch_size", "2", "--dataloader_drop_last", "True", "--logging_steps", "1",
            "--sentence_pooling_method", "mean", "--temperature", "0.02", "--use_cpu", "True",
            "--save_strategy", "no"]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"}
    subprocess.run(argv, check=True, capture_output=True, timeout=600, env=env)
    kw = dict(train_group_size=4, query_max_len=32, passage_max_len=32, learning_rate=1e-3, num_train_epochs=1,
              per_device_train_batch_size=2, dataloader_drop_last=True, logging_steps=1,
              sentence_pooling_method="mean", temperature=0.02, save_strategy="no",
              # FlagEmbedding's defaults where LazyLLM's differ (the plan notes list them):
              pad_to_multiple_of=None, query_instruction_for_retrieval=None, warmup_ratio=0.0, weight_decay=0.0,
              gradient_checkpointing=False, fp16=False)  # fmt: skip
    target = tmp_path / "lazytune"
    result = Path(FlagembeddingFinetune(model, target, launcher=launchers.local(ngpus=0), **kw)(data))
    assert (result / "model.safetensors").read_bytes() == (by_hand / "model.safetensors").read_bytes()
