"""The whole file decides a LLaMA-Factory dataset entry: one fast scan of every record, cached; conflicts and missing
media are errors with file:line; records LF would skip are named in the plan (strict_data=True refuses them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import lazytune.datascan as datascan
from lazytune import ConfigError, DataError
from lazytune.backends.llamafactory.dataset_info import describe, entry_for
from lazytune.data import iter_records
from tests.helpers.lf_data import write_records
from tests.test_llamafactory_plan import file_of, plan_of


def conv(*pairs: tuple[str, str], key: str = "from", content: str = "value") -> list[dict]:
    return [{key: r, content: c} for r, c in pairs]


def chat(i: int) -> dict:
    return {"conversations": conv(("human", f"q{i}"), ("gpt", f"a{i}"))}


def info_of(tmp_path: Path, records: list, name: str = "d.json", stage: str = "sft", jsonl: bool = False) -> dict:
    path = write_records(tmp_path / name, records, jsonl)
    return entry_for(path, "d", stage, tmp_path / "links").info


# ------------------------------------------------------------------------------------ late columns and roles
@pytest.mark.parametrize("jsonl", [False, True])
def test_optional_columns_and_roles_first_seen_late_are_in_the_entry(tmp_path: Path, jsonl: bool) -> None:
    records = [chat(i) for i in range(60)]
    records[45]["system"] = "Be brief."
    records[50]["tools"] = '[{"name": "f"}]'
    records[55]["conversations"] = conv(("human", "call f"), ("function_call", "{}"), ("observation", "1"),
                                        ("gpt", "one"))  # fmt: skip
    records[58]["conversations"].insert(0, {"from": "system", "value": "sys"})
    info = info_of(tmp_path, records, "d.jsonl" if jsonl else "d.json", jsonl=jsonl)
    assert info["columns"] == {"messages": "conversations", "system": "system", "tools": "tools"}
    assert info["tags"] == {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                            "observation_tag": "observation", "function_tag": "function_call",
                            "system_tag": "system"}  # fmt: skip


def test_alpaca_history_and_images_only_late(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(40)]
    records[39]["history"] = [["hi", "hello"]]
    records[30]["input"] = "context"
    info = info_of(tmp_path, records)
    assert info["columns"] == {"prompt": "instruction", "query": "input", "history": "history", "response": "output"}


def test_records_reordered_give_the_same_entry(tmp_path: Path) -> None:
    records = [chat(i) for i in range(30)]
    for r in records[::4]:
        r["system"] = "sys"
    first = info_of(tmp_path, records, "a.json")
    again = info_of(tmp_path, records[::-1], "b.json")
    assert {**first, "file_name": ""} == {**again, "file_name": ""}


# ------------------------------------------------------------------------------------ conflicts
@pytest.mark.parametrize("jsonl", [False, True])
def test_mixed_role_spellings_late_name_the_line(tmp_path: Path, jsonl: bool) -> None:
    records = [chat(i) for i in range(50)]
    records[40]["conversations"] = conv(("user", "q"), ("gpt", "a"))
    path = write_records(tmp_path / ("d.jsonl" if jsonl else "d.json"), records, jsonl)
    line = next(n for n, r in iter_records(path) if r is not None and r["conversations"][0]["from"] == "user")
    with pytest.raises(DataError, match=rf"d\.jsonl?, line {line}: messages mix the 'from' values \['human', 'user'\]"):
        entry_for(path, "d", "sft", tmp_path)


def test_mixed_role_keys_name_the_line(tmp_path: Path) -> None:
    records = [chat(i) for i in range(5)] + [{"conversations": conv(("user", "q"), ("assistant", "a"), key="role",
                                                                    content="content")}]  # fmt: skip
    path = write_records(tmp_path / "d.jsonl", records, jsonl=True)
    with pytest.raises(DataError, match="line 6: messages mix 'from'/'value' and 'role'/'content'"):
        entry_for(path, "d", "sft", tmp_path)


def test_column_sometimes_list_sometimes_string(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "output": "a", "history": []} for i in range(8)]
    records[6]["history"] = "not a list"
    path = write_records(tmp_path / "d.json", records)  # indent=1: record 7 starts on line 2 + 6 * 6
    line = [n for n, _ in iter_records(path)][6]
    with pytest.raises(DataError, match=rf"line {line}: column 'history' is a str here but a list"):
        entry_for(path, "d", "sft", tmp_path)


def test_missing_required_field_late_names_the_line(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "output": "a"} for i in range(30)]
    records[25]["output"] = ""
    path = write_records(tmp_path / "d.jsonl", records, jsonl=True)
    with pytest.raises(DataError, match="line 26: record is missing 'output'"):
        entry_for(path, "d", "sft", tmp_path)


def test_instruction_or_input_is_enough_but_not_neither(tmp_path: Path) -> None:
    records = [{"instruction": "", "input": "x", "output": "a"}, {"instruction": "q", "output": "a"}]
    info_of(tmp_path, records, jsonl=True, name="ok.jsonl")
    records.append({"instruction": "", "input": "", "output": "a"})
    with pytest.raises(DataError, match="line 3: record is missing 'instruction' or 'input'"):
        info_of(tmp_path, records, jsonl=True, name="bad.jsonl")


# ------------------------------------------------------------------------------------ KTO, v1 files
def test_kto_label_column_as_in_lf_demo(tmp_path: Path) -> None:
    records = [{"messages": conv(("user", f"q{i}"), ("assistant", "a"), key="role", content="content"),
                "label": i % 2 == 0} for i in range(6)]  # fmt: skip
    info = info_of(tmp_path, records, stage="kto")
    assert info["columns"] == {"messages": "messages", "kto_tag": "label"}
    records[4]["label"] = None
    with pytest.raises(DataError, match="line .*no true/false 'label'"):
        info_of(tmp_path, records, "bad.json", stage="kto")


def test_v1_engine_files_are_refused_with_the_line(tmp_path: Path) -> None:
    records = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 3
    records.append({"messages": [{"role": "user", "content": [{"type": "text", "value": "hi"}]},
                                 {"role": "assistant", "content": [{"type": "text", "value": "yo"}]}]})  # fmt: skip
    path = write_records(tmp_path / "v1.jsonl", records, jsonl=True)
    with pytest.raises(DataError, match="line 4: .*list of parts: that is the format of LLaMA-Factory's v1 engine"):
        entry_for(path, "d", "sft", tmp_path)


# ------------------------------------------------------------------------------------ skipped records
def test_records_lf_would_skip_are_named_and_strict_refuses(tmp_path: Path) -> None:
    records = [chat(i) for i in range(10)]
    records[7]["conversations"] = conv(("gpt", "a"), ("human", "q"))
    records[8]["conversations"] = conv(("human", "q"), ("gpt", "a"), ("human", "again"))
    data = write_records(tmp_path / "d.jsonl", records, jsonl=True)
    notes = "\n".join(plan_of(tmp_path, data).notes)
    assert "skip 1 of 10 record(s): messages out of order (gpt → human) (first at line 8)" in notes
    assert "skip 1 of 10 record(s): an odd number of messages (first at line 9)" in notes
    with pytest.raises(DataError, match="strict_data=True"):
        plan_of(tmp_path, data, strict_data=True)


# ------------------------------------------------------------------------------------ media
def mm(images: list[str]) -> dict:
    return {"messages": conv(("user", "<image>what?"), ("assistant", "a cat"), key="role", content="content"),
            "images": images}  # fmt: skip


def test_media_resolve_relative_to_the_data_file_in_sub_folders(tmp_path: Path) -> None:
    data_dir = tmp_path / "set"
    (data_dir / "img" / "deep").mkdir(parents=True)
    for name in ("img/1.jpg", "img/deep/2.jpg"):
        (data_dir / name).write_bytes(b"jpg")
    data = write_records(data_dir / "mm.json", [mm(["img/1.jpg"]), mm(["img/deep/2.jpg"])])
    plan = plan_of(tmp_path, data)
    assert yaml.safe_load(file_of(plan, "train.yaml"))["media_dir"] == str(data_dir)
    assert json.loads(file_of(plan, "dataset_info.json"))["mm"]["columns"]["images"] == "images"


def test_missing_media_is_an_error_with_line(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"jpg")
    data = write_records(tmp_path / "mm.jsonl", [mm(["a.jpg"])] * 3 + [mm(["a.jpg", "gone.jpg"])], jsonl=True)
    with pytest.raises(DataError, match=r"mm\.jsonl, line 4: 1 media file\(s\) not found .*images: gone.jpg"):
        plan_of(tmp_path, data)


def test_media_dir_given_wins_and_files_in_two_folders_need_it(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "x.jpg").write_bytes(b"jpg")
    a = write_records(tmp_path / "a" / "mm.json", [mm(["x.jpg"])])
    b = write_records(tmp_path / "b" / "mm.json", [mm(["x.jpg"])])
    with pytest.raises(DataError, match="pass media_dir="):
        plan_of(tmp_path, [a, b])
    plan = plan_of(tmp_path, [a, b], media_dir=str(media))
    assert yaml.safe_load(file_of(plan, "train.yaml"))["media_dir"] == str(media)


# ------------------------------------------------------------------------------------ fast reader and cache
def test_fast_reader_agrees_with_the_careful_one_across_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datascan, "CHUNK", 64)
    records = [{"a": "x}, {" * (i % 4), "b": [{"c": i}, {"d": "]"}], "e": None if i % 3 else 1.5} for i in range(200)]
    for jsonl in (False, True):
        path = write_records(tmp_path / f"r{jsonl}.json", records, jsonl)
        fast = [r for _, r in datascan.fast_records(path, "jsonl" if jsonl else "json")]
        assert fast == [r for _, r in iter_records(path)] == records


def test_scan_is_cached_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAZYTUNE_HOME", str(tmp_path / "home"))
    path = write_records(tmp_path / "d.jsonl", [{"instruction": "q", "output": "a"}] * 5, jsonl=True)
    first = datascan.scan(path)
    assert list((tmp_path / "home" / "cache" / "scans").iterdir())

    def no_rescan(_path: Path):
        raise AssertionError("re-scanned an unchanged file")

    monkeypatch.setattr(datascan, "_scan", no_rescan)
    assert datascan.scan(path) == first
    monkeypatch.undo()
    monkeypatch.setenv("LAZYTUNE_HOME", str(tmp_path / "home"))
    write_records(path, [{"instruction": "q", "output": "a", "system": "s"}] * 5, jsonl=True)
    assert "system" in datascan.scan(path).columns
    assert describe(datascan.scan(path))[1]["columns"]["system"] == "system"


# ------------------------------------------------------------------------------------ tokenized_path
def test_tokenized_path_is_keyed_by_data_and_tokenization_settings(tmp_path: Path) -> None:
    a = write_records(tmp_path / "a.json", [{"instruction": "q", "output": "a"}] * 3)
    b = write_records(tmp_path / "b.json", [{"instruction": "other", "output": "data"}] * 3)
    cache = tmp_path / "tok"

    def tok(data: Path, **kw) -> str:
        plan = plan_of(tmp_path, data, tokenized_path=str(cache), **kw)
        path = yaml.safe_load(file_of(plan, "train.yaml"))["tokenized_path"]
        assert any("tokenized_path" in n for n in plan.notes)
        return path

    first = tok(a)
    assert Path(first).parent == cache
    assert tok(a) == first  # same data, same settings: LF may reuse it
    assert tok(b) != first  # other data never reuses it
    assert tok(a, cutoff_len=64) != first  # nor other tokenization settings
    assert tok(a, learning_rate=1e-3) == first  # training-only settings don't matter


# ------------------------------------------------------------------------------------ merges LF can do
def test_merges_lf_can_and_cannot_do(tmp_path: Path) -> None:
    from tests.test_llamafactory_plan import model_folder

    data = write_records(tmp_path / "a.json", [{"instruction": "q", "output": "a"}] * 3)
    oft = plan_of(tmp_path, data, finetuning_type="oft")
    assert [s.name for s in oft.steps] == ["data", "train", "export"]
    assert yaml.safe_load(file_of(oft, "export.yaml"))["finetuning_type"] == "oft"

    gptq = model_folder(tmp_path / "q", "Qwen2.5-0.5B-GPTQ")
    (gptq / "config.json").write_text('{"model_type": "qwen2", "quantization_config": {"quant_method": "gptq"}}')
    plan = plan_of(tmp_path, data, model=gptq)
    assert [s.name for s in plan.steps] == ["data", "train"] and plan.result == plan.target.lora
    assert any("no merge step" in n for n in plan.notes)
    with pytest.raises(ConfigError, match="Cannot merge adapters to a quantized model"):
        plan_of(tmp_path, data, model=gptq, merge_path=tmp_path / "merged")

    export_cfg = tmp_path / "export.yaml"
    export_cfg.write_text("export_quantization_bit: 4\nexport_quantization_dataset: data/c4_demo.jsonl\n")
    with pytest.raises(ConfigError, match="Please merge adapters before quantizing"):
        plan_of(tmp_path, data, export_config_path=export_cfg)


# ------------------------------------------------------------------------------------ eval data
def test_second_file_is_eval_data_as_in_lazyllm(tmp_path: Path) -> None:
    from lazytune import finetune
    from tests.test_llamafactory_plan import cpu, model_folder

    train = write_records(tmp_path / "train.json", [{"instruction": "q", "output": "a"}] * 4)
    val = write_records(tmp_path / "val.json", [{"instruction": "q2", "output": "b"}] * 2)
    trainer = finetune.llamafactory(model_folder(tmp_path), tmp_path / "t", launcher=cpu())
    plan = trainer.plan(train, val)
    cfg = yaml.safe_load(file_of(plan, "train.yaml"))
    assert cfg["dataset"] == "train" and cfg["eval_dataset"] == "val" and cfg["do_eval"] is True
    assert set(json.loads(file_of(plan, "dataset_info.json"))) == {"train", "val"}
    assert plan.data == [train.resolve()] and any("eval_dataset" in n for n in plan.notes)
    bad = write_records(tmp_path / "bad.json", [{"instruction": "q"}])
    with pytest.raises(DataError, match=r"bad\.json.*missing 'output'"):
        trainer.plan(train, bad)


def test_predict_only_config_predicts_into_the_target_without_merge(tmp_path: Path) -> None:
    example = Path(__file__).parent / "fixtures" / "llamafactory" / "examples" / "extras" / "nlg_eval"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    cfg = yaml.safe_load((example / "llama3_lora_predict.yaml").read_text())
    cfg["adapter_name_or_path"] = str(adapter)
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(cfg))
    data = write_records(tmp_path / "ask.json", [{"instruction": "q", "output": "a"}] * 3)
    plan = plan_of(tmp_path, data, config_path=path)
    assert [s.name for s in plan.steps] == ["predict"] and plan.result == plan.target.root / "predictions"
    pred = yaml.safe_load(file_of(plan, "predict.yaml"))
    assert pred["do_predict"] is True and "do_train" not in pred and pred["eval_dataset"] == "ask"
    assert pred["adapter_name_or_path"] == str(adapter) and pred["predict_with_generate"] is True
    assert pred["output_dir"] == str(plan.target.root / "predictions")
