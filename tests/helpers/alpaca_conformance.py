"""Runs alpaca-lora's own sample construction next to lazytune's and reports every difference (backend env Python).

    python alpaca_conformance.py FIXTURE_DIR TRAIN_SCRIPT TEMPLATES_DIR WORK_DIR  -> one JSON line on stdout

FIXTURE_DIR is tests/fixtures/upstream/alpaca_lora (tloen/alpaca-lora's finetune.py, utils/prompter.py and templates,
unchanged): `tokenize` and `generate_and_tokenize_prompt` are taken out of its `train()` with `ast` and run as they
are, with alpaca-lora's own default for `add_eos_token`. TRAIN_SCRIPT is lazytune/scripts/alpacalora_train.py
(`build_sample`, `tokenize_all`). Tokenizers are built offline in WORK_DIR, one per family: Llama-style sentencepiece
(dummy prefix, byte fallback; also with add_eos_token), GPT-2 byte-level BPE and Qwen-style byte-level BPE.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

TEMPLATES = ("alpaca", "alpaca_legacy", "alpaca_short", "vigogne")
CUTOFFS = (8, 24, 48, 96, 512)
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")  # fmt: skip
CORPUS = [
    "Below is an instruction that describes a task, paired with an input that provides further context.",
    "Write a response that appropriately completes the request.", "### Instruction:", "### Input:", "### Response:",
    "Ci-dessous se trouve une instruction qui décrit une tâche. Écrivez une réponse. ### Réponse: ### Entrée:",
    "Hello world! The quick brown fox jumps over the lazy dog.", "1234 + 5678 = 6912", "def f(x):\n    return {x: x}",
    "Translate to German: good morning -> Guten Morgen", "数字和中文 mixed text", "  two spaces\n\nnew paragraph",
]  # fmt: skip


def records(eos_texts: list[str]) -> list[dict]:
    """Varied alpaca records: inputs or not, outputs opening with spaces/newlines, braces, eos text, long ones."""
    long = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
    outs = ["Hello world!", " leading space", "\nstarts with a newline", "\n\ntwo newlines", "", "x",
            "ends with a newline\n", "1234 + 5678 = 6912", "{instruction} and {input} stay as they are",
            "数字和中文 mixed text", "Guten Morgen", long, "def f(x):\n    return {x: x}", "  two spaces"]  # fmt: skip
    outs += [f"already ends with eos{e}" for e in eos_texts] + [f"{e}" for e in eos_texts]
    instructions = ["Say hello", "Translate to German: good morning", "Add the numbers", "Écris une réponse.",
                    "A long instruction. " + long, "braces {input} {}"]  # fmt: skip
    recs = []
    for i, out in enumerate(outs):
        for j, instruction in enumerate(instructions[:3] if i % 2 else instructions):
            rec = {"instruction": instruction, "output": out}
            if (i + j) % 3 == 0:
                rec["input"] = "some input text" if j % 2 else "\nan input after a newline"
            elif (i + j) % 3 == 1:
                rec["input"] = ""
            recs.append(rec)
    return recs


# -- tokenizers, built offline -------------------------------------------------------------------------------------
def llama_spm(work: Path, add_eos: bool):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder = work / f"llama-spm{'-eos' if add_eos else ''}"
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=500, model_type="bpe", byte_fallback=True,
        add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
    )  # fmt: skip
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": add_eos, "legacy": True}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(folder)


def byte_level(script_dir: Path):
    spec = importlib.util.spec_from_file_location("make_tiny_model", script_dir / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tokenizer(512)


def qwen_style():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=specials[1:])  # fmt: skip


# -- the two implementations -----------------------------------------------------------------------------------------
class Upstream:
    """alpaca-lora's Prompter and its two nested sample functions, run unchanged."""

    def __init__(self, fixture: Path):
        source = (fixture / "finetune.py").read_text(encoding="utf-8")
        train = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "train")
        wanted = [n for n in train.body if isinstance(n, ast.FunctionDef)
                  and n.name in ("tokenize", "generate_and_tokenize_prompt")]  # fmt: skip
        assert len(wanted) == 2, "finetune.py no longer has tokenize and generate_and_tokenize_prompt"
        names = [a.arg for a in train.args.args]
        defaults = dict(zip(names[len(names) - len(train.args.defaults):], train.args.defaults, strict=True))
        self.add_eos_token = ast.literal_eval(defaults["add_eos_token"])
        self.code = compile(ast.Module(body=wanted, type_ignores=[]), str(fixture / "finetune.py"), "exec")
        sys.path.insert(0, str(fixture))
        from utils.prompter import Prompter  # tloen/alpaca-lora utils/prompter.py

        os.chdir(fixture)  # Prompter reads templates/<name>.json relative to the working directory
        self.prompters = {name: Prompter(name) for name in TEMPLATES}

    def sample(self, tokenizer, template: str, rec: dict, cutoff_len: int, train_on_inputs: bool) -> dict:
        scope = {"tokenizer": tokenizer, "cutoff_len": cutoff_len, "train_on_inputs": train_on_inputs,
                 "add_eos_token": self.add_eos_token, "prompter": self.prompters[template]}  # fmt: skip
        exec(self.code, scope)
        point = {"instruction": rec["instruction"], "input": rec.get("input"), "output": rec["output"]}
        out = scope["generate_and_tokenize_prompt"](point)
        return {"input_ids": list(out["input_ids"]), "labels": list(out["labels"])}


def joined_apart(tok, template: dict, rec: dict, cutoff_len: int, ours) -> list[int]:
    """lazytune's construction before issue 17: prompt and output tokenized apart, ids joined, eos always added."""
    prompt = tok(ours.make_prompt(template, rec["instruction"], rec.get("input")))["input_ids"]
    if prompt and prompt[-1] == tok.eos_token_id:
        prompt = prompt[:-1]
    return (prompt + tok(rec["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:cutoff_len]


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location("alpacalora_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser()
    for name in ("fixture", "train_script", "templates", "work"):
        ap.add_argument(name, type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    ours = load_script(a.train_script.resolve())
    templates = {name: ours.load_template(a.templates.resolve() / f"{name}.json") for name in TEMPLATES}
    families = {
        "llama-sentencepiece": llama_spm(a.work, add_eos=False),
        "llama-sentencepiece-add-eos": llama_spm(a.work, add_eos=True),
        "gpt2-byte-level": byte_level(a.train_script.resolve().parent),
        "qwen-style": qwen_style(),
    }
    upstream = Upstream(a.fixture.resolve())
    report = {"add_eos_token": upstream.add_eos_token, "samples": 0, "mismatches": [], "filter_checks": 0,
              "filter_mismatches": [], "families": {}}  # fmt: skip
    for family, tok in families.items():
        recs = records(sorted({tok.eos_token, "</s>"}))
        stats = report["families"][family] = {"records": len(recs), "separate_tokenization_differs": 0}
        for template in TEMPLATES:
            for cutoff in CUTOFFS:
                for train_on_inputs in (True, False):
                    for i, rec in enumerate(recs):
                        theirs = upstream.sample(tok, template, rec, cutoff, train_on_inputs)
                        mine = ours.build_sample(tok, templates[template], rec, cutoff, train_on_inputs)
                        report["samples"] += 1
                        if train_on_inputs and theirs["input_ids"] != joined_apart(tok, templates[template], rec,
                                                                                    cutoff, ours):  # fmt: skip
                            stats["separate_tokenization_differs"] += 1
                        got = {"input_ids": mine["input_ids"], "labels": mine["labels"]}
                        if got != theirs and len(report["mismatches"]) < 5:
                            report["mismatches"].append({"family": family, "template": template, "cutoff": cutoff,
                                                         "train_on_inputs": train_on_inputs, "record": i,
                                                         "upstream": theirs, "lazytune": got})  # fmt: skip
                        elif got != theirs:
                            report["mismatches"].append(None)
        # LazyLLM's filter_nums (its alpaca-lora copy): map (cut to cutoff_len) then keep len(input_ids) < filter_nums
        data = a.work / f"{family}.json"
        data.write_text(json.dumps(recs), encoding="utf-8")
        lengths = {c: sorted(len(upstream.sample(tok, "alpaca", r, c, True)["input_ids"]) for r in recs)
                   for c in (96, 512)}  # fmt: skip
        median = {c: v[len(v) // 2] for c, v in lengths.items()}  # a filter_nums keeping about half the samples
        for cutoff, filter_nums in ((96, median[96]), (96, 96), (96, 97), (160, 512), (512, median[512])):
            args = argparse.Namespace(data=[str(data)], cutoff_len=cutoff, filter_nums=filter_nums,
                                      train_on_inputs=True)  # fmt: skip
            kept, _ = ours.tokenize_all(args, tok, templates["alpaca"])
            expected = [s for s in (upstream.sample(tok, "alpaca", r, cutoff, True) for r in recs)
                        if len(s["input_ids"]) < filter_nums]  # fmt: skip
            report["filter_checks"] += 1
            if [s["input_ids"] for s in kept] != [s["input_ids"] for s in expected]:
                report["filter_mismatches"].append({"family": family, "cutoff": cutoff, "filter_nums": filter_nums,
                                                    "kept": len(kept), "expected": len(expected)})  # fmt: skip
    report["mismatch_count"] = len(report["mismatches"])
    report["mismatches"] = [m for m in report["mismatches"] if m]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
