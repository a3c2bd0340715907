"""`make gpu-check`: on a machine with an NVIDIA GPU, run every `gpu`-marked test and the GPU benchmark, and write
one JSON file plus a short table. `make gpu-check DRY_RUN=1` prints every command it would run and runs none.

    python3 -m benchmarks.gpu_check [--dry-run] [--python PY] [--wheels .whl] [--work DIR] [--out DIR] [--only a,b]

Works offline: every backend runs with LAZYTUNE_<BACKEND>_PYTHON = PY (default: this Python, which must have torch
with CUDA, transformers, peft and accelerate), and what PY lacks is installed from the wheel folder `make gpu-wheels`
made beforehand on a machine with a package index (`.whl/common` into WORK/site, `.whl/collie` into WORK/site-collie,
which only CoLLiE's steps see first). Models are random weights in the shapes of tests/fixtures/configs (Qwen2.5-0.5B
and Qwen2.5-7B) with an offline tokenizer: nothing is downloaded. Each command has its own time limit; one that fails
is recorded and the rest still run. Planned at about 15 minutes on one H100.

Setup steps whose output exists are skipped, and every call adds its cases to WORK/gpu-check-all.json, so where one
command may run at most 10 minutes the check runs as several calls with `--only` (each brings the setup its cases
need). On this project's lent machine, with `.whl` carried:
`make gpu-check GPU_CHECK_ARGS="--only matmul,pytest-gpu,lf-lora-0.5b"`, then `--only lf-lora-7b`, then
`--only lf-qlora-0.5b,lf-deepspeed-0.5b,alpacalora-0.5b,flagembedding,collie-lora`, then `--only qlora-memory-7b`.

This file uses the standard library only (it runs before anything is installed); the cases themselves are
benchmarks/gpu_bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "fixtures" / "configs"
SCRIPTS = ROOT / "lazytune" / "scripts"


@dataclass
class Command:
    name: str
    argv: list[str]
    timeout: int  # seconds
    env: dict[str, str] = field(default_factory=dict)
    result: Path | None = None  # the case's RESULT json, when it writes one
    creates: Path | None = None  # setup: skipped when this exists (a later call on the same machine reuses it)
    needs: tuple[str, ...] = ()  # setup commands this case needs (with --only)


def paths(work: Path) -> dict[str, Path]:
    return {
        "site": work / "site", "site_collie": work / "site-collie", "collie_python": work / "bin" / "python-collie",
        "models": work / "models", "data": work / "data", "runs": work / "runs", "results": work / "results",
        "home": work / "lazytune-home", "hf": work / "hf",
    }  # fmt: skip


def environment(python: str, work: Path) -> dict[str, str]:
    """Variables every command gets (on top of this process's own)."""
    p = paths(work)
    return {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(p["site"])]),
        "PATH": os.pathsep.join([str(p["site"] / "bin"), os.environ.get("PATH", "")]),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(p["hf"]),
        "LAZYTUNE_HOME": str(p["home"]), "LAZYTUNE_QUIET": "1", "PYTHONUNBUFFERED": "1",
        "DISABLE_VERSION_CHECK": "1",  # LLaMA-Factory 0.9.5 pins transformers <= 5.6; the box has its own
        "LAZYTUNE_LLAMAFACTORY_PYTHON": python, "LAZYTUNE_ALPACALORA_PYTHON": python,
        "LAZYTUNE_FLAGEMBEDDING_PYTHON": python, "LAZYTUNE_COLLIE_PYTHON": str(p["collie_python"]),
        "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false",
    }  # fmt: skip


def collie_wrapper(python: str, work: Path) -> str:
    """A `python` for CoLLiE's steps: its own transformers 4.40 / peft 0.10 first on the path, then the rest."""
    p = paths(work)
    pythonpath = os.pathsep.join([str(p["site_collie"]), str(ROOT), str(p["site"])])
    return f'#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)} exec {shlex.quote(python)} "$@"\n'


def commands(python: str, wheels: Path, work: Path, only: set[str] | None = None) -> list[Command]:
    p = paths(work)
    bench = [python, "-m", "benchmarks.gpu_bench"]
    res = p["results"]
    m05, m7, llama, bert = p["models"] / "Qwen2.5-0.5B", p["models"] / "Qwen2.5-7B", p["models"] / "llama-collie", \
        p["models"] / "bert-embed"  # fmt: skip
    alpaca, triples = p["data"] / "alpaca.json", p["data"] / "triples.jsonl"
    out: list[Command] = [
        Command("nvidia-smi", ["nvidia-smi", "--query-gpu=index,name,memory.total,compute_cap,driver_version",
                               "--format=csv"], 30),  # fmt: skip
    ]
    for folder, site in (("common", p["site"]), ("collie", p["site_collie"])):
        found = sorted((wheels / folder).glob("*.whl")) if (wheels / folder).is_dir() else []
        if found or not (wheels / folder).exists():  # dry run without wheels: show the command with the glob
            names = [str(w) for w in found] or [str(wheels / folder / "*.whl")]
            out.append(Command(f"install-{folder}", [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                                     "--no-compile", "--no-cache-dir", "--upgrade", "--target",
                                                     str(site), *names], 300,
                               creates=site / ("collie" if folder == "collie" else "llamafactory")))  # fmt: skip
    out += [
        Command("imports", [python, "-c", "import torch, transformers, peft, llamafactory, trl, datasets, deepspeed, "
                            "bitsandbytes, FlagEmbedding; print(torch.__version__, torch.version.cuda, "
                            "transformers.__version__, peft.__version__, llamafactory.__version__, "
                            "deepspeed.__version__, bitsandbytes.__version__)"], 180),  # fmt: skip
        Command("imports-collie", [str(p["collie_python"]), "-c", "import collie, transformers, peft; "
                                   "print(transformers.__version__, peft.__version__)"], 180),  # fmt: skip
        Command("matmul", [*bench, "matmul", "--result", str(res / "matmul.json")], 120, result=res / "matmul.json"),
        Command("pytest-gpu", [python, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider",
                               str(ROOT / "tests")], 600),  # fmt: skip
        Command("make-model-0.5b", [*bench, "make-model", "--config", str(CONFIGS / "Qwen2.5-0.5B.json"),
                                    "--out", str(m05)], 300, creates=m05 / "tokenizer.json"),  # fmt: skip
        Command("make-model-7b", [*bench, "make-model", "--config", str(CONFIGS / "Qwen2.5-7B.json"),
                                  "--out", str(m7)], 600, creates=m7 / "tokenizer.json"),  # fmt: skip
        Command("make-model-collie", [str(p["collie_python"]), str(SCRIPTS / "make_tiny_model.py"), "--out",
                                      str(llama), "--arch", "llama", "--hidden", "1024", "--layers", "8",
                                      "--vocab", "4096"], 300, creates=llama / "tiny_model.json"),  # fmt: skip
        Command("make-model-bert", [python, str(SCRIPTS / "make_tiny_bert.py"), "--embed", str(bert),
                                    "--hidden", "256", "--layers", "4"], 300,
                creates=bert / "tiny_model.json"),  # fmt: skip
        Command("make-data", [*bench, "make-data", "--out", str(alpaca)], 120, creates=alpaca),
        Command("make-embed-data", [*bench, "make-embed-data", "--out", str(triples)], 120, creates=triples),
    ]

    def case(name: str, args: list[str], timeout: int, needs: tuple[str, ...]) -> Command:
        result = res / f"{name}.json"
        return Command(name, [*bench, *args, "--result", str(result)], timeout, result=result, needs=needs)

    lf = ("install-common", "make-data")

    runs = p["runs"]
    out += [
        case("lf-lora-0.5b", ["lf", "--model", str(m05), "--data", str(alpaca), "--work", str(runs / "lf-05b"),
                              "--by-hand"], 600, (*lf, "make-model-0.5b")),  # fmt: skip
        case("lf-lora-7b", ["lf", "--model", str(m7), "--data", str(alpaca), "--work", str(runs / "lf-7b"),
                            "--by-hand", "max_steps=20"], 600, (*lf, "make-model-7b")),  # fmt: skip
        case("lf-qlora-0.5b", ["lf", "--model", str(m05), "--data", str(alpaca), "--work", str(runs / "qlora"),
                               "quantization_bit=4"], 600, (*lf, "make-model-0.5b")),  # fmt: skip
        case("lf-deepspeed-0.5b", ["lf", "--model", str(m05), "--data", str(alpaca), "--work", str(runs / "ds"),
                                   f"deepspeed={ROOT / 'configs' / 'deepspeed' / 'ds_z2_config.json'}"], 600,
             (*lf, "make-model-0.5b")),
        case("alpacalora-0.5b", ["alpacalora", "--model", str(m05), "--data", str(alpaca), "--work",
                                 str(runs / "alpacalora"), "num_epochs=1", "batch_size=16", "micro_batch_size=4",
                                 "cutoff_len=1024", "filter_nums=1000000", "val_set_size=0", "save_steps=1000",
                                 "warmup_steps=2", "logging_steps=5"], 600, (*lf, "make-model-0.5b")),  # fmt: skip
        case("flagembedding", ["flagembedding", "--model", str(bert), "--data", str(triples), "--work",
                               str(runs / "fe"), "num_train_epochs=1", "per_device_train_batch_size=8",
                               "train_group_size=4", "query_max_len=32", "passage_max_len=64",
                               "sentence_pooling_method=mean", "save_strategy=no"], 600,
             ("install-common", "make-model-bert", "make-embed-data")),  # fmt: skip
        case("collie-lora", ["collie", "--model", str(llama), "--data", str(alpaca), "--work", str(runs / "collie"),
                             "dp_size=1", "batch_size=8", "micro_batch_size=4", "num_epochs=1"], 600,
             ("install-common", "install-collie", "make-data", "make-model-collie")),
        Command("qlora-memory-7b", [python, str(SCRIPTS / "measure_memory.py"), "--config",
                                    str(CONFIGS / "Qwen2.5-7B.json"), "--micro-batch", "4", "--ctx-len", "1024",
                                    "--checkpointing", "--qlora"], 600, needs=("install-common",)),  # fmt: skip
    ]
    for c in out:
        if c.name == "pytest-gpu":
            c.needs = ("install-common", "install-collie")
    if only:
        unknown = only - {c.name for c in out}
        if unknown:
            cases = [c.name for c in out if c.result or c.name in ("pytest-gpu", "qlora-memory-7b")]
            raise SystemExit(f"gpu_check: unknown case(s) {', '.join(sorted(unknown))}; cases: {', '.join(cases)}")
        needed = {n for c in out if c.name in only for n in c.needs} | {"nvidia-smi"}
        out = [c for c in out if c.name in only or c.name in needed]
    return out


def run_one(cmd: Command, env: dict[str, str], logs: Path) -> dict:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{cmd.name}.log"
    if cmd.creates is not None and cmd.creates.exists():
        print(f"== {cmd.name}: already done ({cmd.creates})", flush=True)
        return {"name": cmd.name, "argv": cmd.argv, "exit": 0, "seconds": 0.0, "result": None, "cached": True}
    started = time.time()
    print(f"== {cmd.name}: {shlex.join(cmd.argv)}", flush=True)
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd.argv, env={**os.environ, **env, **cmd.env}, cwd=ROOT, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=cmd.timeout, check=False)  # fmt: skip
        code: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    except OSError as exc:
        code = f"cannot start: {exc}"
    text = log.read_text(errors="replace")
    data = None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line[7:])
        elif line.startswith("{") and cmd.name == "qlora-memory-7b":
            data = json.loads(line)
    out = {"name": cmd.name, "argv": cmd.argv, "exit": code, "seconds": round(time.time() - started, 1),
           "result": data, "log": str(log)}  # fmt: skip
    if code != 0:
        out["tail"] = "\n".join(text.splitlines()[-25:])
    print(f"   -> {code} in {out['seconds']} s", flush=True)
    return out


def table(results: list[dict]) -> str:
    rows = ["| case | exit | s | tokens/s (lazytune / by hand) | MFU | peak GPU GiB (run / by hand) | estimate GiB |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        d = r.get("result") or {}
        tps = d.get("tokens_per_s")
        hand = d.get("by_hand_tokens_per_s")
        tokens = f"{tps} / {round(hand, 1) if hand else '-'}" if tps else "-"
        peak = d.get("peak_gpu_gib", d.get("peak_reserved_gib"))
        peak_s = f"{peak} / {d['by_hand_peak_gpu_gib']}" if "by_hand_peak_gpu_gib" in d else (peak or "-")
        extra = d.get("bf16_matmul_tflops")
        mfu = d.get("mfu", f"matmul {extra} TFLOP/s" if extra else "-")
        rows.append(f"| {r['name']} | {r['exit']} | {r['seconds']} | {tokens} | {mfu} | {peak_s} | "
                    f"{d.get('estimate_gib', '-')} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print every command, run none")
    ap.add_argument("--python", default=sys.executable, help="the Python with torch+CUDA the backends run with")
    ap.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lazytune-gpu-check")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results"))
    ap.add_argument("--only", default="", help="comma-separated case names (setup commands always run)")
    args = ap.parse_args(argv)
    only = {x.strip() for x in args.only.split(",") if x.strip()} or None
    env = environment(args.python, args.work)
    cmds = commands(args.python, args.wheels, args.work, only)
    wrapper = paths(args.work)["collie_python"]
    if args.dry_run:
        print("# environment of every command:")
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
        print(f"# write {wrapper} (mode 755):\n" + "".join(f"#   {line}\n" for line in
                                                           collie_wrapper(args.python, args.work).splitlines()))
        for c in cmds:
            print(f"# {c.name} (time limit {c.timeout} s)\n{shlex.join(c.argv)}")
        return 0
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(collie_wrapper(args.python, args.work))
    wrapper.chmod(0o755)
    started = time.time()
    results = [run_one(c, env, args.work / "logs") for c in cmds]
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
              "seconds": round(time.time() - started, 1), "python": args.python, "results": results}  # fmt: skip
    # Every case run on this machine so far (several calls of at most 10 minutes each add up to the whole check).
    history = args.work / "gpu-check-all.json"
    earlier = json.loads(history.read_text())["results"] if history.exists() else []
    merged = {r["name"]: r for r in [*earlier, *results] if not r.get("cached")}
    report["all_results"] = list(merged.values())
    history.write_text(json.dumps({"results": report["all_results"]}, indent=2, default=str) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    (args.out / f"gpu-check-{stamp}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = table(report["all_results"])
    (args.out / f"gpu-check-{stamp}.md").write_text(text + "\n")
    print(text)
    print(f"gpu-check: {sum(r['exit'] == 0 for r in results)}/{len(results)} commands passed in "
          f"{report['seconds']} s; {args.out / f'gpu-check-{stamp}.json'}")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
