"""finetune.flagembedding without training: model kind, whitelists, data checks, argv, hardware adaptation.

Bad input must fail before any process starts and leave the target untouched. Tests that read the installed
transformers version (plan argv) use the flagembedding environment and skip when it is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import launchers
from lazytune.backends.base import script
from lazytune.backends.flagembedding import FlagembeddingFinetune
from lazytune.backends.flagembedding.args import OPTION_SPECS, flag_names, option_args
from lazytune.errors import ConfigError, DataError, OptionsError, TargetExistsError, UnknownOptionError
from lazytune.resources import configs_dir
from tests.helpers.embed import fe_python, triples, write_triples

CPU1 = dict(launcher=launchers.local(ngpus=0))


def fake_model(root: Path, name: str, archs: list[str] | None) -> Path:
    """A folder with only config.json: enough for everything before training."""
    folder = root / name
    folder.mkdir(parents=True)
    config = {"model_type": "bert"} if archs is None else {"model_type": "bert", "architectures": archs}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def embedder(tmp_path: Path) -> Path:
    return fake_model(tmp_path, "mini-encoder", ["BertModel"])


@pytest.fixture
def reranker(tmp_path: Path) -> Path:
    return fake_model(tmp_path, "mini-cross", ["BertForSequenceClassification"])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_triples(tmp_path / "data" / "train.jsonl", 8)


# -- model kind -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "archs", "kind"), [
    ("mini-encoder", ["BertModel"], "embed"),
    ("mini-cross", ["XLMRobertaForSequenceClassification"], "rerank"),
    ("bge-reranker-tiny", ["BertForMaskedLM"], "rerank"),
    ("my-embedder", None, "embed"),
    ("bge-small", ["BertForMaskedLM"], "embed"),
])  # fmt: skip
def test_kind_from_model(tmp_path: Path, name: str, archs: list[str] | None, kind: str) -> None:
    trainer = FlagembeddingFinetune(fake_model(tmp_path, name, archs), tmp_path / "out", **CPU1)
    assert trainer.model_kind == kind
    assert trainer.options["model_kind"] == kind


def test_explicit_kind_wins_and_accepts_lazyllm_spelling(tmp_path: Path) -> None:
    model = fake_model(tmp_path, "bert-base", ["BertForMaskedLM"])
    assert FlagembeddingFinetune(model, tmp_path / "o", model_kind="reranker", **CPU1).model_kind == "rerank"
    assert FlagembeddingFinetune(model, tmp_path / "o", model_kind="embed", **CPU1).model_kind == "embed"


@pytest.mark.parametrize(("name", "archs", "words"), [
    ("bert-base", ["BertForMaskedLM"], ["cannot tell", "model_kind"]),
    ("plain", None, ["no architectures", "model_kind"]),
    ("my-reranker", ["BertModel"], ["name says rerank", "model_kind"]),
    ("tiny-llama", ["LlamaForCausalLM"], ["decoder-only model", "encoder-only"]),
])  # fmt: skip
def test_unclear_or_wrong_model_kind(tmp_path: Path, name: str, archs: list[str] | None, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        FlagembeddingFinetune(fake_model(tmp_path, name, archs), tmp_path / "out", **CPU1)
    for word in words:
        assert word in str(err.value)


def test_bad_model_kind_value(embedder: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="'model_kind': must be one of 'embed', 'rerank', got 'classifier'"):
        FlagembeddingFinetune(embedder, tmp_path / "out", model_kind="classifier", **CPU1)


# -- options ----------------------------------------------------------------------------------------------------------
def test_unknown_option_suggests(embedder: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownOptionError, match="did you mean 'learning_rate'"):
        FlagembeddingFinetune(embedder, tmp_path / "out", learning_rat=1e-4, **CPU1)


def test_option_of_the_other_kind_is_explained(reranker: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownOptionError) as err:
        FlagembeddingFinetune(reranker, tmp_path / "out", temperature=0.05, sentence_pooling_methd="mean", **CPU1)
    text = str(err.value)
    assert "'temperature' is an option of embed models" in text and "model_kind='embed'" in text
    assert "did you mean" in text  # the typo is reported in the same error


def test_lazyllm_defaults_per_kind(embedder: Path, reranker: Path, tmp_path: Path) -> None:
    e = FlagembeddingFinetune(embedder, tmp_path / "e", **CPU1).options
    r = FlagembeddingFinetune(reranker, tmp_path / "r", **CPU1).options
    assert (e["query_max_len"], e["passage_max_len"], e["learning_rate"], e["train_group_size"]) == (512, 512, 1e-5, 8)
    assert (r["query_max_len"], r["passage_max_len"], r["learning_rate"], r["train_group_size"]) == (256, 256, 6e-5, 8)
    assert e["temperature"] == 0.02 and e["sentence_pooling_method"] == "cls" and e["warmup_ratio"] == 0.1
    assert "temperature" not in r and r["fp16"] is True and r["gradient_checkpointing"] is True


def test_option_types_are_checked(embedder: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionsError) as err:
        FlagembeddingFinetune(embedder, tmp_path / "out", train_group_size="many", sentence_pooling_method="max",
                              **CPU1)  # fmt: skip
    assert "train_group_size" in str(err.value) and "sentence_pooling_method" in str(err.value)


# -- argv rendering (pure) ------------------------------------------------------------------------------------------
def test_flag_names_follow_transformers_version() -> None:
    assert flag_names("5.23.0") == {"warmup_ratio": "warmup_steps", "overwrite_output_dir": None}
    assert flag_names("4.44.2") == {}


def test_booleans_are_rendered_as_values_and_unset_options_left_out() -> None:
    options = OPTION_SPECS["embed"].resolve({"fp16": False, "knowledge_distillation": True})
    old = option_args(options, "embed", "4.44.2")
    new = option_args(options, "embed", "5.6.0")
    pairs = dict(zip(old[::2], old[1::2], strict=True))
    assert pairs["--fp16"] == "False" and pairs["--knowledge_distillation"] == "True"
    assert pairs["--warmup_ratio"] == "0.1" and pairs["--overwrite_output_dir"] == "True"
    assert "--max_steps" not in pairs and "--deepspeed" not in pairs and "--validate" not in pairs
    assert "--warmup_ratio" not in new and "--overwrite_output_dir" not in new
    assert new[new.index("--warmup_steps") + 1] == "0.1"


def test_deepspeed_configs_ship() -> None:
    for stage in (0, 1):
        config = json.loads((configs_dir() / "flagembedding" / f"ds_stage{stage}.json").read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert config["train_micro_batch_size_per_gpu"] == "auto"
        # FlagEmbedding's own files: DeepSpeed's AdamW and WarmupDecayLR, as its examples train
        assert config["optimizer"]["type"] == "AdamW" and config["scheduler"]["type"] == "WarmupDecayLR"
    assert (configs_dir() / "flagembedding" / "LICENSE-FlagEmbedding").is_file()


# -- data: checked before anything starts, target untouched -----------------------------------------------------------
@pytest.mark.parametrize(("record", "message"), [
    ({"query": "q", "neg": ["n"]}, "missing field 'pos'"),
    ({"query": "q", "pos": "p", "neg": ["n"]}, "'pos' must be a list of strings"),
    ({"query": "q", "pos": [], "neg": ["n"]}, "'pos' is empty"),
    ({"query": "q", "pos": ["p"], "neg": []}, "'neg' is empty"),
    ({"query": 3, "pos": ["p"], "neg": ["n"]}, "'query' must be a string"),
    ({"query": "q", "pos": ["p"], "neg": ["n"], "prompt": 1}, "'prompt' must be a string"),
])  # fmt: skip
def test_bad_record_names_file_line_and_field(embedder: Path, tmp_path: Path, record: dict, message: str) -> None:
    records = triples(8)
    records.insert(5, record)
    path = write_triples(tmp_path / "bad.jsonl", records=records)
    target = tmp_path / "out"
    trainer = FlagembeddingFinetune(embedder, target, **CPU1)
    with pytest.raises(DataError) as err:
        trainer.start(path)
    assert f"{path}, line 6: {message}" in str(err.value)
    assert not target.exists()


def test_bad_record_in_a_json_array(embedder: Path, tmp_path: Path) -> None:
    records = triples(4)
    del records[2]["neg"]
    path = write_triples(tmp_path / "bad.json", records=records, fmt="json")
    with pytest.raises(DataError, match=r"bad\.json, line \d+: missing field 'neg'"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(path)


def test_knowledge_distillation_needs_scores(embedder: Path, data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="line 1: missing field 'pos_scores'"):
        FlagembeddingFinetune(embedder, tmp_path / "out", knowledge_distillation=True, **CPU1).plan(data)
    records = [dict(r, pos_scores=[1.0], neg_scores=[0.1, 0.2]) for r in triples(4)]  # 3 negatives, 2 scores
    path = write_triples(tmp_path / "kd.jsonl", records=records)
    with pytest.raises(DataError, match="'neg_scores' must be a list of numbers, one per 'neg' passage"):
        FlagembeddingFinetune(embedder, tmp_path / "out", knowledge_distillation=True, **CPU1).plan(path)


def test_text_files_are_refused(embedder: Path, data: Path, tmp_path: Path) -> None:
    (data.parent / "notes.txt").write_text("not training data\n")
    with pytest.raises(DataError, match=r"notes\.txt: FlagEmbedding reads only \.json and \.jsonl"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(data.parent)


def test_too_few_records_for_one_step(embedder: Path, tmp_path: Path) -> None:
    path = write_triples(tmp_path / "one.jsonl", 1)
    with pytest.raises(DataError, match="only 1 record.*no training step would run"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(path)


def test_target_with_results_needs_overwrite(embedder: Path, data: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "lazyllm_merge").mkdir(parents=True)
    (tmp_path / "out" / "lazyllm_merge" / "config.json").write_text("{}")
    with pytest.raises(TargetExistsError, match="overwrite=True"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(data)


def test_backend_not_installed_is_a_clear_error(embedder: Path, data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("LAZYTUNE_FLAGEMBEDDING_PYTHON", sys.executable)  # the dev venv: no FlagEmbedding in it
    with pytest.raises(ConfigError, match="lazytune env install flagembedding"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(data)
    assert not (tmp_path / "out").exists()


# -- plans with the installed FlagEmbedding environment -------------------------------------------------------------
def argv_pairs(argv: tuple[str, ...]) -> dict[str, str]:
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}


def test_cpu_plan(embedder: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    plan = FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(data.parent)
    (step,) = plan.steps
    assert step.distributed and step.argv[1] == script("flagembedding_train.py")
    assert step.argv[2:6] == ("--trainer-log", str(plan.run_dir / "trainer_log.jsonl"), "-m",
                              "FlagEmbedding.finetune.embedder.encoder_only.base")
    args = argv_pairs(step.argv)
    assert args["--use_cpu"] == "True" and args["--output_dir"] == str(tmp_path / "out" / "lazyllm_merge")
    assert args["--train_data"] == str(data) and args["--report_to"] == "none"
    assert "--fp16" not in args and "--negatives_cross_device" not in args and "--deepspeed" not in args
    assert any("fp16 left off" in n for n in plan.notes)
    assert plan.result == tmp_path / "out" / "lazyllm_merge"
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_cpu_plan_with_two_processes_shares_negatives(embedder: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    trainer = FlagembeddingFinetune(embedder, tmp_path / "out", launcher=launchers.local(ngpus=0, nproc=2))
    args = argv_pairs(trainer.plan(data).steps[0].argv)
    assert args["--negatives_cross_device"] == "True" and args["--use_cpu"] == "True"


@pytest.mark.parametrize(("kw", "message"), [
    ({"fp16": True}, "fp16=True needs a GPU"),
    ({"negatives_cross_device": True}, "negatives_cross_device=True needs several processes"),
    ({"deepspeed": "stage1"}, "deepspeed is not installed"),
    ({"deepspeed": "/no/such/ds.json"}, "no such file"),
])  # fmt: skip
def test_impossible_requests_fail_before_start(embedder: Path, data: Path, tmp_path: Path, kw: dict,
                                               message: str) -> None:  # fmt: skip
    fe_python()
    with pytest.raises(OptionsError, match=message):
        FlagembeddingFinetune(embedder, tmp_path / "out", **kw, **CPU1).start(data)
    assert not (tmp_path / "out").exists()


def test_deepspeed_none_and_rerank_plan(reranker: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    plan = FlagembeddingFinetune(reranker, tmp_path / "out", deepspeed="none", fp16=False, **CPU1).plan(data)
    argv = plan.steps[0].argv
    assert argv[argv.index("-m") + 1] == "FlagEmbedding.finetune.reranker.encoder_only.base"
    args = argv_pairs(argv)
    assert args["--query_max_len"] == "256" and args["--learning_rate"] == "6e-05" and args["--fp16"] == "False"
    assert "--deepspeed" not in args and "--temperature" not in args


class OneGpu(launchers.Launcher):
    """Plans as if one GPU were present (no GPU here: only the topology is faked; nothing is submitted)."""

    def __init__(self, name: str):
        self.name = name

    def topology(self) -> launchers.Topology:
        return launchers.Topology(1, 1, 1, self.name, 32.0)

    def submit(self, steps, name):  # pragma: no cover - never called by these tests
        raise AssertionError("nothing may start")


def test_gpu_plan_keeps_lazyllm_precision_and_leaves_cpu_alone(embedder: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    plan = FlagembeddingFinetune(embedder, tmp_path / "out", launcher=OneGpu("NVIDIA H100 80GB HBM3")).plan(data)
    args = argv_pairs(plan.steps[0].argv)
    assert args["--fp16"] == "True" and "--use_cpu" not in args
    assert "--deepspeed" not in args  # auto: deepspeed is not installed in the environment


def test_bf16_on_a_gpu_without_it(embedder: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    trainer = FlagembeddingFinetune(embedder, tmp_path / "out", launcher=OneGpu("Tesla V100-SXM2-32GB"), bf16=True,
                                    fp16=False)  # fmt: skip
    with pytest.raises(OptionsError, match="Tesla V100-SXM2-32GB has no bf16 support"):
        trainer.plan(data)


def test_listing_shows_both_kinds_and_types_every_key() -> None:
    spec = FlagembeddingFinetune.option_spec()
    for key in ("temperature", "query_instruction_for_rerank", "model_kind", "lr"):
        assert key in spec
    assert "embed 1e-05, rerank 6e-05" in spec.options["learning_rate"].help
    assert FlagembeddingFinetune.option_spec("rerank") is OPTION_SPECS["rerank"]


def test_deepspeed_choice(embedder: Path, data: Path, tmp_path: Path) -> None:
    """Which config is passed, given what is installed (the version probe's answer is passed in directly)."""
    fe_python()
    gpu = FlagembeddingFinetune(embedder, tmp_path / "out", launcher=OneGpu("NVIDIA A100-SXM4-80GB"))
    plan = gpu.plan(data)
    with_ds, without_ds = {"deepspeed": "0.16.4"}, {"deepspeed": None}
    assert gpu._deepspeed(plan, without_ds) is None  # auto: only with deepspeed installed
    ours = gpu._deepspeed(plan, with_ds)
    assert ours == str(plan.run_dir / "ds_stage0.json")
    assert json.loads(plan.files[-1].content)["zero_optimization"]["stage"] == 0  # copied into the run folder
    plan.options["deepspeed"] = "stage1"
    assert gpu._deepspeed(plan, with_ds).endswith("ds_stage1.json")
    mine = tmp_path / "my ds.json"
    mine.write_text("{}")
    plan.options["deepspeed"] = str(mine)
    assert gpu._deepspeed(plan, with_ds) == str(mine)
    plan.options["deepspeed"] = "none"
    assert gpu._deepspeed(plan, with_ds) is None
    cpu = FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1)
    assert cpu._deepspeed(cpu.plan(data), with_ds) is None  # auto: never on CPU


def test_validate_false_reads_only_the_head(embedder: Path, tmp_path: Path) -> None:
    fe_python()
    records = triples(30)
    del records[25]["pos"]
    path = write_triples(tmp_path / "big.jsonl", records=records)
    with pytest.raises(DataError, match="line 26: missing field 'pos'"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(path)
    assert FlagembeddingFinetune(embedder, tmp_path / "out", validate=False, **CPU1).plan(path).steps


def test_cli_plan_and_cli_errors(reranker: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    base = [sys.executable, "-m", "lazytune.cli", "plan", "flagembedding", "--base", str(reranker),
            "--target", str(tmp_path / "out"), "--data", str(data), "--ngpus", "0"]  # fmt: skip
    proc = subprocess.run([*base, "query_max_len=64", "query_instruction_for_rerank=no", "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    argv = json.loads(proc.stdout)["steps"][0]["argv"]
    assert argv[argv.index("--query_max_len") + 1] == "64"
    assert argv[argv.index("--query_instruction_for_rerank") + 1] == "no"  # a str option stays a string
    proc = subprocess.run([*base, "temperature=0.1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "'temperature' is an option of embed models" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_prompt_in_some_records_only(embedder: Path, reranker: Path, tmp_path: Path) -> None:
    """datasets fills a missing field with None and FlagEmbedding would then use 'None' as the instruction."""
    records = triples(8)
    records[3]["prompt"] = "Represent this query: "
    path = write_triples(tmp_path / "mixed.jsonl", records=records)
    with pytest.raises(DataError, match=r"mixed\.jsonl, line 1: 'prompt' is set in some records .*line 4\)"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(path)
    records = [dict(r, query_prompt="q: ") for r in triples(8)]
    del records[6]["query_prompt"]
    path = write_triples(tmp_path / "mixed_rerank.jsonl", records=records)
    with pytest.raises(DataError, match="line 7: 'query_prompt' is set in some records"):
        FlagembeddingFinetune(reranker, tmp_path / "out", query_instruction_for_rerank="q: ", **CPU1).plan(path)


def test_prompt_check_follows_the_instruction(embedder: Path, tmp_path: Path) -> None:
    fe_python()
    records = triples(8)
    records[3]["prompt"] = "Represent this query: "
    path = write_triples(tmp_path / "mixed.jsonl", records=records)
    plan = FlagembeddingFinetune(embedder, tmp_path / "out", query_instruction_for_retrieval=None, **CPU1).plan(path)
    assert "--query_instruction_for_retrieval" not in plan.steps[0].argv


def test_lengths_beyond_the_position_embeddings(tmp_path: Path) -> None:
    model = fake_model(tmp_path, "short-reranker", ["BertForSequenceClassification"])
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 512}))
    FlagembeddingFinetune(model, tmp_path / "out", **CPU1)  # 256 + 256: fits
    with pytest.raises(OptionsError, match="query_max_len \\+ passage_max_len = 768 exceeds the 512 positions"):
        FlagembeddingFinetune(model, tmp_path / "out", passage_max_len=512, **CPU1)
    embedder = fake_model(tmp_path, "short-embedder", ["BertModel"])
    (embedder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "max_position_embeddings": 128}))
    with pytest.raises(OptionsError, match="a max_len of 512 exceeds the 128 positions"):
        FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1)
    FlagembeddingFinetune(embedder, tmp_path / "out", query_max_len=64, passage_max_len=128, **CPU1)


# -- issue 17: decoder-only models, positions, reranker last batch, LazyLLM defaults, progress ---------------------
@pytest.mark.parametrize(("model_type", "archs", "kind"), [
    ("gemma2", ["Gemma2Model"], None),  # bge-multilingual-gemma2
    ("mistral", ["MistralModel"], None),  # bge-en-icl
    ("qwen2", ["Qwen2Model"], "embed"),
    ("gemma", ["GemmaForCausalLM"], "rerank"),  # bge-reranker-v2-gemma
    ("qwen2", ["Qwen2ForSequenceClassification"], None),
    (None, ["Gemma2Model"], None),  # no model_type: the architecture's name says it
])  # fmt: skip
def test_decoder_only_models_are_refused_with_the_reason(tmp_path: Path, model_type: str | None, archs: list[str],
                                                         kind: str | None) -> None:  # fmt: skip
    model = tmp_path / "bge-decoder"
    model.mkdir()
    config = {"architectures": archs, **({"model_type": model_type} if model_type else {})}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        FlagembeddingFinetune(model, tmp_path / "out", **({"model_kind": kind} if kind else {}), **CPU1)
    message = str(err.value)
    assert "decoder-only model" in message and "FlagEmbedding.finetune.embedder.decoder_only.icl" in message
    assert "cls pooling" in message


def test_roberta_family_positions_have_a_padding_offset(tmp_path: Path) -> None:
    model = tmp_path / "xlmr-embedder"
    model.mkdir()
    config = {"model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"], "max_position_embeddings": 514,
              "pad_token_id": 1}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    FlagembeddingFinetune(model, tmp_path / "out", **CPU1)  # 512: fits
    with pytest.raises(OptionsError, match=r"a max_len of 514 exceeds the 512 positions .*minus the padding offset 2"):
        FlagembeddingFinetune(model, tmp_path / "out", passage_max_len=514, **CPU1)
    with pytest.raises(OptionsError, match="a max_len of 513 exceeds the 512 positions"):
        FlagembeddingFinetune(model, tmp_path / "out", query_max_len=513, **CPU1)


def test_reranker_without_drop_last_needs_full_batches(reranker: Path, tmp_path: Path) -> None:
    fe_python()
    odd = write_triples(tmp_path / "odd.jsonl", 7)
    with pytest.raises(OptionsError, match="drop_last=False with a reranker: 7 records, not a multiple of 2"):
        FlagembeddingFinetune(reranker, tmp_path / "out", dataloader_drop_last=False, **CPU1).plan(odd)
    even = write_triples(tmp_path / "even.jsonl", 8)
    assert FlagembeddingFinetune(reranker, tmp_path / "out", dataloader_drop_last=False, **CPU1).plan(even).steps
    with pytest.raises(OptionsError, match="the record count is unknown"):
        FlagembeddingFinetune(reranker, tmp_path / "out", dataloader_drop_last=False, validate=False,
                              **CPU1).plan(even)  # fmt: skip


def test_plan_says_which_values_are_lazyllm_s(embedder: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    plan = FlagembeddingFinetune(embedder, tmp_path / "out", weight_decay=0.0, learning_rate=2e-5, **CPU1).plan(data)
    (note,) = [n for n in plan.notes if n.startswith("LazyLLM's defaults")]
    assert "warmup_ratio=0.1 (FlagEmbedding: 0.0)" in note and "gradient_checkpointing=True" in note
    assert "weight_decay" not in note and "learning_rate" not in note  # given by the user
    assert "fp16" not in note  # left off on CPU
    plan = FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(data)
    assert "weight_decay=0.01 (FlagEmbedding: 0.0)" in next(n for n in plan.notes if n.startswith("LazyLLM's"))


def test_several_processes_without_deepspeed_checkpoint_without_reentrance(embedder: Path, data: Path,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    fe_python()
    two = launchers.local(ngpus=0, nproc=2)
    args = argv_pairs(FlagembeddingFinetune(embedder, tmp_path / "out", launcher=two).plan(data).steps[0].argv)
    assert json.loads(args["--gradient_checkpointing_kwargs"]) == {"use_reentrant": False}
    args = argv_pairs(FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1).plan(data).steps[0].argv)
    assert "--gradient_checkpointing_kwargs" not in args  # one process: as FlagEmbedding's examples
    off = FlagembeddingFinetune(embedder, tmp_path / "out", launcher=two, gradient_checkpointing=False)
    assert "--gradient_checkpointing_kwargs" not in argv_pairs(off.plan(data).steps[0].argv)


def test_a_loss_that_never_moves_is_a_warning(embedder: Path, data: Path, tmp_path: Path) -> None:
    fe_python()
    trainer = FlagembeddingFinetune(embedder, tmp_path / "out", **CPU1)
    plan = trainer.plan(data)
    log = trainer.progress_log(plan)
    log.parent.mkdir(parents=True)
    lines = [{"current_steps": i, "total_steps": 4, "loss": 2.7725887} for i in range(1, 5)]
    log.write_text("".join(json.dumps(e) + "\n" for e in lines))
    (warning,) = trainer.metrics(plan)["warnings"]
    assert "the loss never moved (2.77259 at all 4 logged steps)" in warning
    lines[-1]["loss"] = 2.5
    log.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert "warnings" not in trainer.metrics(plan)
