"""The cases of `make gpu-check`, one per call, each run by benchmarks/gpu_check.py as its own process on the GPU
machine. Each prints one JSON line starting with `RESULT ` (and writes it to --result).

    python -m benchmarks.gpu_bench make-model --config tests/fixtures/configs/Qwen2.5-0.5B.json --out W/Qwen2.5-0.5B
    python -m benchmarks.gpu_bench make-data --out W/alpaca.json
    python -m benchmarks.gpu_bench lf --model W/Qwen2.5-0.5B --data W/alpaca.json --work W/lf-05b [--by-hand] [k=v ...]
    python -m benchmarks.gpu_bench alpacalora|flagembedding|collie --model ... --data ... --work ...
    python -m benchmarks.gpu_bench matmul        # the card's measured bf16 matmul TFLOP/s (8192^3)

Models are random weights in the shape of a real config (tests/fixtures/configs), with the offline byte-level BPE
tokenizer of lazytune/scripts/make_tiny_model.py: nothing is downloaded. Peak GPU memory is sampled from nvidia-smi
every 0.2 s while a case runs (the whole GPU, minus what was in use before it started).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peak, TFLOP/s, from NVIDIA's data sheets (without sparsity). Matched in order.
BF16_PEAK_TFLOPS = (
    ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.5), ("H100", 989.4), ("H800", 989.4), ("H20", 148.0),
    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
    ("A6000", 154.8), ("A10", 125.0), ("4090", 165.2), ("3090", 71.0),
)  # fmt: skip


def result(data: dict[str, Any], path: Path | None) -> None:
    line = json.dumps(data, default=str)
    print("RESULT " + line, flush=True)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")


def bf16_peak(name: str) -> float | None:
    return next((tflops for key, tflops in BF16_PEAK_TFLOPS if key.lower() in name.lower()), None)


class GpuMemory:
    """Peak used memory of GPU 0 (MiB) from nvidia-smi, sampled in a thread, minus the use before it started."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.base = self._used()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _used() -> int:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=10).stdout  # fmt: skip
            return int(float(out.strip().splitlines()[0]))
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gib(self) -> float:
        return round((self.peak - self.base) / 1024, 2)


# -- inputs ----------------------------------------------------------------------------------------------------------
def _tiny_model_module():
    spec = importlib.util.spec_from_file_location("make_tiny_model", ROOT / "lazytune/scripts/make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def make_model(config: Path, out: Path, vocab: int) -> dict[str, Any]:
    """Random bf16 weights in the shape of `config` (made on the GPU: a 7B takes seconds), offline tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_model_module().build_tokenizer(vocab)
    raw = json.loads(config.read_text())
    raw.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, use_cache=False)  # fmt: skip
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    cfg = AutoConfig.from_pretrained(out)
    started = time.time()
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    return {"case": "make-model", "model": out.name, "params": params, "seconds": round(time.time() - started, 1)}


def make_data(out: Path, records: int, words: int) -> dict[str, Any]:
    """Alpaca records whose prompt + response are longer than any cutoff used here, so every sample is cut to
    exactly cutoff_len tokens: tokens/s and memory are then those of full-length batches."""
    vocab = _tiny_model_module().WORDS
    data = []
    for i in range(records):
        text = " ".join(vocab[(i * 7 + j * 13) % len(vocab)] for j in range(words))
        data.append({"instruction": f"Continue the text number {i}.", "input": "", "output": text})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return {"case": "make-data", "records": records, "words_per_record": words}


def make_embed_data(out: Path, records: int) -> dict[str, Any]:
    """FlagEmbedding triples {query, pos, neg} from the same word list."""
    vocab = _tiny_model_module().WORDS
    lines = []
    for i in range(records):
        words = [vocab[(i * 11 + j * 5) % len(vocab)] for j in range(40)]
        lines.append(json.dumps({"query": " ".join(words[:6]), "pos": [" ".join(words[:30])],
                                 "neg": [" ".join(words[10 + k:40 - k]) for k in range(3)]}))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return {"case": "make-embed-data", "records": records}


# -- lazytune runs ---------------------------------------------------------------------------------------------------
def _estimate(model: Path, micro_batch: int, ctx_len: int, checkpointing: bool, method: str = "lora",
              lora_r: int = 8) -> float | None:
    """finetune.auto's memory estimate (GiB) of this set-up on one GPU."""
    try:
        from lazytune.backends.auto.memory import Setup, estimate
        from lazytune.backends.auto.sizing import model_facts

        setup = Setup(method=method, ngpus=1, micro_batch=micro_batch, grad_accum=1, checkpointing=checkpointing,
                      zero=0, ctx_len=ctx_len, lora_r=lora_r)  # fmt: skip
        return round(estimate(model_facts(model), setup).total, 2)
    except Exception as exc:  # noqa: BLE001 - the estimate is a comparison, not the point of the run
        print(f"no estimate: {exc}", file=sys.stderr)
        return None


def _params(model: Path) -> int | None:
    try:
        from lazytune.backends.auto.sizing import model_facts

        return int(model_facts(model).params_total)
    except Exception:  # noqa: BLE001
        return None


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        return out.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _throughput(out: dict[str, Any], tokens_per_s: float | None, params: int | None, checkpointing: bool) -> None:
    """tokens/s and MFU: LoRA's model FLOPs are 4 x params per token (forward 2N + input gradients 2N; no weight
    gradients for frozen weights; gradient checkpointing's recompute and attention's own FLOPs not counted)."""
    out["tokens_per_s"] = round(tokens_per_s, 1) if tokens_per_s else None
    peak = bf16_peak(out.get("gpu", ""))
    if tokens_per_s and params and peak:
        out["mfu"] = round(tokens_per_s * 4 * params / (peak * 1e12), 4)
        out["bf16_peak_tflops"] = peak


def lf_case(model: Path, data: Path, work: Path, by_hand: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """finetune.llamafactory through lazytune; then (--by-hand) the same train.yaml through `llamafactory-cli`."""
    from lazytune import finetune, launchers

    kw: dict[str, Any] = dict(num_train_epochs=1, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                              cutoff_len=1024, logging_steps=5, save_strategy="no", plot_loss=False,
                              include_effective_tokens_per_second=True, max_steps=30)  # fmt: skip
    kw.update(overrides)
    target = work / "lazytune"
    shutil.rmtree(work, ignore_errors=True)
    trainer = finetune.llamafactory(model, target, launcher=launchers.local(ngpus=1, stream=True), **kw)
    plan = trainer.plan(data)
    out: dict[str, Any] = {"case": "lf", "model": model.name, "gpu": _gpu_name(), "options": overrides,
                           "steps": [list(s.argv) for s in plan.steps]}  # fmt: skip
    started = time.time()
    with GpuMemory() as mem:
        trainer.start(plan=plan).wait(progress="none")
    out["lazytune_seconds"] = round(time.time() - started, 1)
    out["peak_gpu_gib"] = mem.peak_gib
    manifest = json.loads((target / "lazytune_run.json").read_text())
    steps = {s["name"]: s.get("seconds") for s in manifest.get("job", {}).get("steps", [])}
    out["lazytune_step_seconds"] = steps
    results = json.loads((target / "lazyllm_lora" / "train_results.json").read_text())
    out["train_runtime"] = results.get("train_runtime")
    out["final_loss"] = results.get("train_loss")
    checkpointing = not kw.get("disable_gradient_checkpointing", False)
    _throughput(out, results.get("effective_tokens_per_sec"), _params(model), checkpointing)
    method = "qlora" if kw.get("quantization_bit") else "lora"
    out["estimate_gib"] = _estimate(model, kw["per_device_train_batch_size"], kw["cutoff_len"], checkpointing, method)
    if by_hand:  # the same YAML lazytune wrote, through LLaMA-Factory's own CLI, into another folder
        yaml_path = plan.run_dir / "train.yaml"
        hand_out = work / "by-hand"
        argv = [sys.executable, "-m", "llamafactory.cli", "train", str(yaml_path), f"output_dir={hand_out}"]
        out["by_hand_argv"] = argv
        started = time.time()
        with GpuMemory() as mem:
            train_env = next(s.env for s in plan.steps if s.name == "train")  # the data step runs first
            proc = subprocess.run(argv, env={**os.environ, **train_env}, check=False)
        out["by_hand_seconds"] = round(time.time() - started, 1)
        out["by_hand_exit"] = proc.returncode
        out["by_hand_peak_gpu_gib"] = mem.peak_gib
        if proc.returncode == 0:
            hand = json.loads((hand_out / "train_results.json").read_text())
            out["by_hand_train_runtime"] = hand.get("train_runtime")
            out["by_hand_tokens_per_s"] = hand.get("effective_tokens_per_sec")
            out["by_hand_final_loss"] = hand.get("train_loss")
        if (target / "lazyllm_merge").is_dir():  # disk: a 7B merge is 15 GB
            shutil.rmtree(target / "lazyllm_merge")
    return out


def backend_case(backend: str, model: Path, data: Path, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One run of another backend through lazytune on one GPU: wall time, peak memory, final loss."""
    from lazytune import finetune, launchers

    shutil.rmtree(work, ignore_errors=True)
    factory = getattr(finetune, backend)
    trainer = factory(model, work / "out", launcher=launchers.local(ngpus=1, stream=True), **overrides)
    plan = trainer.plan(data)
    out: dict[str, Any] = {"case": backend, "model": model.name, "gpu": _gpu_name(), "options": overrides,
                           "steps": [list(s.argv) for s in plan.steps], "notes": plan.notes}  # fmt: skip
    started = time.time()
    with GpuMemory() as mem:
        run = trainer.start(plan=plan)
        run.wait(progress="none")
    out["seconds"] = round(time.time() - started, 1)
    out["peak_gpu_gib"] = mem.peak_gib
    manifest = json.loads((work / "out" / "lazytune_run.json").read_text())
    out["metrics"] = manifest.get("metrics")
    return out


def matmul() -> dict[str, Any]:
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    tflops = 10 * 2 * n**3 / (time.perf_counter() - start) / 1e12
    name = torch.cuda.get_device_name()
    cap = torch.cuda.get_device_capability()
    return {"case": "matmul", "gpu": name, "compute_capability": f"{cap[0]}.{cap[1]}",
            "bf16_matmul_tflops": round(tflops, 1), "bf16_peak_tflops": bf16_peak(name),
            "torch": torch.__version__}  # fmt: skip


def parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=("make-model", "make-data", "make-embed-data", "lf", "alpacalora",
                                     "flagembedding", "collie", "matmul"))  # fmt: skip
    ap.add_argument("--config", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--words", type=int, default=1500)
    ap.add_argument("--by-hand", action="store_true")
    ap.add_argument("--result", type=Path)
    ap.add_argument("overrides", nargs="*", help="key=value options for the backend")
    args = ap.parse_intermixed_args(argv)  # key=value items may come after options
    overrides = parse_overrides(args.overrides)
    if args.case == "make-model":
        data = make_model(args.config, args.out, args.vocab)
    elif args.case == "make-data":
        data = make_data(args.out, args.records, args.words)
    elif args.case == "make-embed-data":
        data = make_embed_data(args.out, args.records)
    elif args.case == "lf":
        data = lf_case(args.model, args.data, args.work, args.by_hand, overrides)
    elif args.case == "matmul":
        data = matmul()
    else:
        data = backend_case(args.case, args.model, args.data, args.work, overrides)
    result(data, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
