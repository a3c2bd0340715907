"""Chat with, and evaluate, a fine-tuned LLM and its base model, inside the backend's environment.

Standalone (never imports lazytune); `lazytune chat` / `lazytune eval` run it with the Python of the environment that
trained the model, as a launcher step:

    python llm_model.py SPEC.json

SPEC is written by lazytune.evaluate:
  mode      "chat" (answer spec["prompts"] once), "serve" (answer requests appended to <session>/requests.jsonl until
            one says stop; the interactive `lazytune chat`), or "eval" (loss / perplexity, optionally generations)
  family    "llamafactory": LLaMA-Factory's own template, tokenizer fixes, model loader and data pipeline (train.yaml)
            "alpaca": the alpaca-lora prompt template and tokenization of alpacalora_train.py
  models    [{"name": "base" | "tuned", "path": model folder, "adapter": LoRA folder or null}]
  out       where the answer JSON goes; progress: a JSON-lines file of {"current_steps", "total_steps"}

Errors the user can act on (a model that does not fit memory, data that gives no sample) are written to `out` as
{"error": ...} and the exit code is 3.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

IGNORE = -100


class UserError(Exception):
    """Something lazytune reports as it is (no traceback)."""


def say(*parts: object) -> None:
    print("llm_model:", *parts, flush=True)


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- model families --------------------------------------------------------------------------------------------------
class LlamaFactoryModel:
    """A model loaded the way `llamafactory-cli chat` loads it: LF's template (with its tokenizer fixes) and loader."""

    def __init__(self, spec: dict, model: dict):
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args = {"model_name_or_path": model["path"], "template": spec["template"], "infer_dtype": "auto"}
        if model.get("adapter"):
            args.update(adapter_name_or_path=model["adapter"], finetuning_type="lora")
        if spec.get("trust_remote_code"):
            args["trust_remote_code"] = True
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        self.tokenizer_module = load_tokenizer(model_args)
        self.tokenizer = self.tokenizer_module["tokenizer"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        if getattr(self.model, "hf_device_map", None) is None:
            self.model.to(device_name())
        self.model.eval()

    def prompt_ids(self, messages: list[dict], system: str | None) -> list[int]:
        prompt, _ = self.template.encode_oneturn(self.tokenizer, [*messages, {"role": "assistant", "content": ""}],
                                                 system)  # fmt: skip
        return prompt

    def stop_ids(self) -> list[int]:
        return list(self.template.get_stop_token_ids(self.tokenizer))


def lf_samples(spec: dict, tokenizer_module: dict, template: object) -> list[dict]:
    """The eval data through LF's own pipeline (train.yaml's cutoff_len, template, masking), as training saw it."""
    import yaml
    from llamafactory.data import get_dataset
    from llamafactory.hparams import get_train_args

    cfg = yaml.safe_load(Path(spec["train_yaml"]).read_text(encoding="utf-8"))
    stage = cfg.get("stage", "sft")
    cfg.update(
        stage="pt" if stage == "pt" else "sft", do_train=True, do_eval=False, do_predict=False,
        dataset=spec["dataset"], dataset_dir=spec["dataset_dir"], output_dir=spec["work_dir"],
        overwrite_output_dir=True, report_to="none", plot_loss=False, val_size=0.0, streaming=False,
        packing=False, neat_packing=False, overwrite_cache=True,
    )  # fmt: skip
    for key in ("eval_dataset", "tokenized_path", "resume_from_checkpoint", "deepspeed", "fsdp", "fsdp_config"):
        cfg.pop(key, None)
    if spec.get("max_samples"):
        cfg["max_samples"] = int(spec["max_samples"])
    else:
        cfg.pop("max_samples", None)
    model_args, data_args, training_args, _, _ = get_train_args(cfg)
    dataset = get_dataset(template, model_args, data_args, training_args, stage=cfg["stage"], **tokenizer_module)
    rows = dataset["train_dataset"]
    return [{"input_ids": list(r["input_ids"]), "labels": list(r["labels"])} for r in rows]


class AlpacaModel:
    """A model with the alpaca-lora prompt template (alpacalora_train.py's prompt and tokenization)."""

    def __init__(self, spec: dict, model: dict):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import alpacalora_train

        self.train = alpacalora_train
        self.prompt_template = alpacalora_train.load_template(Path(spec["prompt_template"]))
        self.tokenizer = AutoTokenizer.from_pretrained(model["path"])
        dtype = torch.float32 if device_name() == "cpu" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(model["path"], dtype=dtype)
        if model.get("adapter"):
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, model["adapter"]).merge_and_unload()
        self.model.to(device_name())
        self.model.eval()

    def prompt_ids(self, messages: list[dict], system: str | None) -> list[int]:
        # alpaca prompts are one instruction (+ optional input): the last user turn is the instruction and the
        # system text, when given, its input
        instruction = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        prompt = self.train.make_prompt(self.prompt_template, instruction, system)
        ids = self.tokenizer(prompt)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return ids[:-1] if eos is not None and ids and ids[-1] == eos else ids

    def stop_ids(self) -> list[int]:
        return [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []


def alpaca_samples(spec: dict, loaded: AlpacaModel) -> list[dict]:
    import argparse

    args = argparse.Namespace(data=spec["data"], filter_nums=10**9, cutoff_len=int(spec["cutoff_len"]),
                              train_on_inputs=False)  # fmt: skip
    try:
        samples, _ = loaded.train.tokenize_all(args, loaded.tokenizer, loaded.prompt_template)
    except loaded.train.TrainError as exc:
        raise UserError(str(exc)) from exc
    return samples[: int(spec["max_samples"])] if spec.get("max_samples") else samples


def load(spec: dict, model: dict) -> LlamaFactoryModel | AlpacaModel:
    adapter = f" + adapter {model['adapter']}" if model.get("adapter") else ""
    say(f"loading {model['name']}: {model['path']}{adapter}")
    try:
        return LlamaFactoryModel(spec, model) if spec["family"] == "llamafactory" else AlpacaModel(spec, model)
    except MemoryError as exc:
        raise UserError(f"the {model['name']} model {model['path']} does not fit in memory ({exc}); use a "
                        "machine with more memory or a GPU (--launcher / --ngpus)") from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise UserError(f"the {model['name']} model {model['path']} does not fit in GPU memory: {exc}") from exc
        raise


def unload(loaded: object) -> None:
    import gc

    import torch

    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- generation and loss ---------------------------------------------------------------------------------------------
def generate(loaded: LlamaFactoryModel | AlpacaModel, ids: list[int], max_new_tokens: int) -> str:
    import torch

    model, tok = loaded.model, loaded.tokenizer
    stops = [i for i in loaded.stop_ids() if i is not None]
    inputs = torch.tensor([ids], device=model.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (stops[0] if stops else 0)
    with torch.no_grad():
        out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stops or None, pad_token_id=pad)  # fmt: skip
    return tok.decode(out[0][len(ids):], skip_special_tokens=True).strip()


def sample_loss(model: object, sample: dict) -> tuple[float, int]:
    """Summed cross-entropy over the response tokens (labels != -100) and their number."""
    import torch

    ids = torch.tensor([sample["input_ids"]], device=model.device)
    labels = torch.tensor([sample["labels"]], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    shift_logits, shift_labels = logits[0, :-1], labels[0, 1:]
    n = int((shift_labels != IGNORE).sum())
    if n == 0:
        return 0.0, 0
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE, reduction="sum")
    return float(loss), n


def last_response(sample: dict) -> tuple[list[int], list[int]] | None:
    """(prompt ids, reference ids) of the sample's last answer: the last run of labelled tokens."""
    labels = sample["labels"]
    end = max((i for i, v in enumerate(labels) if v != IGNORE), default=None)
    if end is None:
        return None
    start = end
    while start > 0 and labels[start - 1] != IGNORE:
        start -= 1
    return sample["input_ids"][:start], labels[start: end + 1]


class ProgressLog:
    """JSON lines in LLaMA-Factory's trainer_log format, so lazytune's progress bar follows them."""

    def __init__(self, path: str | None, total: int):
        self.path, self.total, self.done = (Path(path) if path else None), total, 0

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"current_steps": self.done, "total_steps": self.total}) + "\n")


def run_eval(spec: dict) -> dict:
    first = load(spec, spec["models"][0])
    if spec["family"] == "llamafactory":
        samples = lf_samples(spec, first.tokenizer_module, first.template)
    else:
        samples = alpaca_samples(spec, first)
    if not samples:
        raise UserError("the eval data gave no sample with answer tokens (all cut off or empty)")
    generate_too = bool(spec.get("generate"))
    progress = ProgressLog(spec.get("progress"), len(samples) * len(spec["models"]) * (2 if generate_too else 1))
    results: dict = {"records": len(samples), "models": {}}
    loaded = first
    for index, model in enumerate(spec["models"]):
        if index:
            unload(loaded)
            loaded = load(spec, model)
        started, total, tokens = time.time(), 0.0, 0
        for sample in samples:
            loss, n = sample_loss(loaded.model, sample)
            total, tokens = total + loss, tokens + n
            progress.step()
        mean = total / tokens if tokens else float("nan")
        out: dict = {"loss": mean, "perplexity": math.exp(mean) if mean < 700 else float("inf"), "tokens": tokens}
        if generate_too:
            predictions, references = [], []
            for sample in samples:
                pair = last_response(sample)
                if pair is None:
                    continue
                prompt, reference = pair
                references.append(loaded.tokenizer.decode(reference, skip_special_tokens=True).strip())
                predictions.append(generate(loaded, prompt, int(spec.get("max_new_tokens") or 128)))
                progress.step()
            out.update(predictions=predictions, references=references)
        out["seconds"] = round(time.time() - started, 3)
        say(f"{model['name']}: loss {mean:.4f} over {tokens} tokens in {out['seconds']} s")
        results["models"][model["name"]] = out
    return results


def answer(loaded_models: dict, names: list[str], messages: list[dict], system: str | None, max_new: int) -> dict:
    return {name: generate(loaded_models[name], loaded_models[name].prompt_ids(messages, system), max_new)
            for name in names}  # fmt: skip


def run_chat(spec: dict) -> dict:
    loaded = {m["name"]: load(spec, m) for m in spec["models"]}
    names = [m["name"] for m in spec["models"]]
    max_new = int(spec.get("max_new_tokens") or 128)
    answers = [answer(loaded, names, [{"role": "user", "content": p}], spec.get("system"), max_new)
               for p in spec["prompts"]]  # fmt: skip
    return {"answers": answers}


def serve(spec: dict) -> dict:
    """Answer each request line of <session>/requests.jsonl in <session>/responses.jsonl (a file queue: works the
    same on this machine and on a SLURM node that shares the folder). Ends on {"stop": true} or when idle too long."""
    session = Path(spec["session"])
    requests, responses = session / "requests.jsonl", session / "responses.jsonl"
    loaded = {m["name"]: load(spec, m) for m in spec["models"]}
    max_new = int(spec.get("max_new_tokens") or 128)

    def respond(data: dict) -> None:
        with open(responses, "a", encoding="utf-8") as f:
            f.write(json.dumps(data) + "\n")

    respond({"ready": True, "models": list(loaded)})
    handled, last = 0, time.time()
    idle = float(spec.get("idle_timeout") or 3600)
    while time.time() - last < idle:
        text = requests.read_text(encoding="utf-8") if requests.exists() else ""
        complete = [ln for ln in text.split("\n")[:-1] if ln.strip()]  # the last line may be half written
        if len(complete) <= handled:
            time.sleep(0.05)
            continue
        for line in complete[handled:]:
            handled += 1
            last = time.time()
            request = json.loads(line)
            if request.get("stop"):
                return {"served": handled - 1}
            try:
                system, limit = request.get("system"), int(request.get("max_new_tokens") or max_new)
                # each model keeps its own history (its own earlier answers)
                answers = {name: generate(loaded[name], loaded[name].prompt_ids(messages, system), limit)
                           for name, messages in request["messages_by_model"].items()}  # fmt: skip
                respond({"id": request["id"], "answers": answers})
            except Exception as exc:  # one bad turn must not end the session
                respond({"id": request["id"], "error": f"{type(exc).__name__}: {exc}"})
    return {"served": handled, "note": "stopped after being idle"}


def main() -> int:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(spec["out"])
    try:
        result = {"chat": run_chat, "serve": serve, "eval": run_eval}[spec["mode"]](spec)
        code = 0
    except UserError as exc:
        result, code = {"error": str(exc)}, 3
    except MemoryError as exc:
        result, code = {"error": f"out of memory: {exc}; use a machine with more memory or a GPU"}, 3
    except RuntimeError as exc:  # torch.OutOfMemoryError is one; anything else stays a failure with its traceback
        if "out of memory" not in str(exc).lower():
            raise
        result, code = {"error": f"the model does not fit in memory on {device_name()}: {exc}; use a GPU with "
                                 "more memory, or lower --max-new-tokens"}, 3
    result["device"] = device_name()
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    if code:
        say("error:", result["error"])
    return code


if __name__ == "__main__":
    sys.exit(main())
