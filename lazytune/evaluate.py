"""After training: chat with a finished run's model and measure it against its base (`lazytune chat` / `eval`).

    from lazytune import runs
    run = runs.find_run("runs/sft")                    # a target folder, run id or manifest
    run.chat("Spell the digit 3", compare=True)        # {"base": "...", "tuned": "..."}
    run.evaluate("heldout.json", generate=True)        # {"base": {"loss": ...}, "tuned": {...}, "change": {...}}

The models are loaded in the backend's own environment by a script run as a launcher step (like training), with the
chat template the run trained with: LLaMA-Factory's template machinery and data pipeline (the run's train.yaml), the
alpaca-lora prompt template, or FlagEmbedding's pooling and instructions. Results are saved in
`<target>/lazytune_eval/<time>.json`; `lazytune jobs` shows the latest beside the final loss.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import launchers
from launchers import Job, Launcher, Step

from .errors import ConfigError, LazytuneError
from .plan import FileSpec

if TYPE_CHECKING:
    from .run import Run

EVAL_DIR = "lazytune_eval"
CHAT_DIR = "lazytune_chat"
LLM_BACKENDS = ("llamafactory", "alpacalora")
KIND_NAMES = {"llm": "LLM", "embed": "embedder", "rerank": "reranker"}
#: metrics where a smaller value is better (the table marks the better side of a change)
LOWER_IS_BETTER = ("loss", "perplexity")


class EvalError(LazytuneError):
    """The chat or eval job ran but could not do its work (e.g. the model does not fit memory): exit code 1."""


@dataclass(frozen=True)
class TunedModel:
    """What chat and eval need to know about a finished run: which folders to load, how, and with which env."""

    run_id: str
    backend: str
    kind: str  # "llm", "embed" or "rerank"
    env_name: str
    base: Path
    target: Path
    tuned: Path  # the merged model, or the base when only an adapter is usable
    adapter: Path | None = None
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # template, train_yaml, prompt_template, pooling, ...

    def models(self, base: bool = True, tuned: bool = True) -> list[dict[str, Any]]:
        out = []
        if base:
            out.append({"name": "base", "path": str(self.base), "adapter": None})
        if tuned:
            adapter = str(self.adapter) if self.adapter else None
            out.append({"name": "tuned", "path": str(self.tuned), "adapter": adapter})
        return out


# -- which model a run produced --------------------------------------------------------------------------------------
def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.safetensors.index.json"))


def tuned_model(record: Run) -> TunedModel:
    """The fine-tuned model of `record`, or a ConfigError saying why there is none to load.

    A run whose merge step failed (or whose merged folder is gone) but whose adapter is complete gives base + adapter,
    with a note saying so."""
    data, backend = record.data, record.backend
    if backend not in (*LLM_BACKENDS, "flagembedding"):
        raise ConfigError(f"run {record.run_id}: chat and eval work with llamafactory, alpacalora and flagembedding "
                          f"runs, not {backend}")  # fmt: skip
    plan = data.get("plan", {})
    target = Path(plan.get("target", {}).get("root") or record.target)
    merge = Path(plan.get("target", {}).get("merge") or target / "lazyllm_merge")
    lora = Path(plan.get("target", {}).get("lora") or target / "lazyllm_lora")
    base = Path(plan.get("base_model", ""))
    state = record.state
    steps = {s.get("name"): s.get("exit_code") for s in data.get("job", {}).get("steps", [])}
    trained = state == "COMPLETED" or steps.get("train") == 0
    if not trained:
        what = {"RUNNING": "still running: wait for it (`lazytune logs -f`)", "PENDING": "waiting to start"}.get(
            state, f"{state}: its training did not finish (`lazytune logs {record.run_id}` says why); train again")
        raise ConfigError(f"run {record.run_id} is {what}; chat and eval need a finished run")
    if not base.is_dir():
        raise ConfigError(f"run {record.run_id}: its base model {base} is gone; chat/eval compare against it")
    notes: list[str] = []
    adapter = lora if (lora / "adapter_config.json").is_file() else None
    if _has_weights(merge):
        tuned, use_adapter = merge, None
    elif adapter is not None:
        reason = f"the merge step failed (exit code {steps.get('merge', steps.get('export'))})" \
            if state != "COMPLETED" else f"{merge} holds no merged model"  # fmt: skip
        notes.append(f"{reason}: using the base model + LoRA adapter {adapter}")
        tuned, use_adapter = base, adapter
    elif _has_weights(lora):  # full / freeze fine-tuning writes the whole model there; the copy step failed
        notes.append(f"{merge} holds no model: using the trained model in {lora}")
        tuned, use_adapter = lora, None
    else:
        raise ConfigError(f"run {record.run_id} ({state}) left no model to load: no merged model in {merge} and no "
                          f"LoRA adapter in {lora}; train again")  # fmt: skip
    if not _has_weights(base):
        raise ConfigError(f"run {record.run_id}: the base model {base} has no weights (config.json + *.safetensors)")
    options = plan.get("options", {})
    kind, env_name, extra = "llm", backend, {}
    if backend == "llamafactory":
        train_yaml = Path(plan.get("run_dir", "")) / "train.yaml"
        if not train_yaml.is_file():
            raise ConfigError(f"run {record.run_id}: {train_yaml} is gone (it holds the template the run used)")
        import yaml

        cfg = yaml.safe_load(train_yaml.read_text(encoding="utf-8")) or {}
        if cfg.get("stage") not in ("sft", "pt", None):
            notes.append(f"stage {cfg['stage']}: eval measures the loss on the answers of sft-format data")
        extra = {"family": "llamafactory", "template": cfg.get("template") or "default", "train_yaml": str(train_yaml),
                 "stage": cfg.get("stage", "sft"), "trust_remote_code": bool(cfg.get("trust_remote_code"))}
    elif backend == "alpacalora":
        argv = next((s["argv"] for s in plan.get("steps", []) if s.get("name") == "train"), [])
        template = argv[argv.index("--prompt-template") + 1] if "--prompt-template" in argv else None
        if not template or not Path(template).is_file():
            raise ConfigError(f"run {record.run_id}: its prompt template {template} is gone")
        extra = {"family": "alpaca", "prompt_template": template, "cutoff_len": options.get("cutoff_len", 256)}
    else:
        kind = _flagembedding_kind(plan)
        extra = {"options": {k: v for k, v in options.items() if k in FE_KEYS}}
    return TunedModel(record.run_id, backend, kind, env_name, base, target, tuned, use_adapter, tuple(notes), extra)


FE_KEYS = ("sentence_pooling_method", "normalize_embeddings", "query_max_len", "passage_max_len", "max_len",
           "query_instruction_for_retrieval", "query_instruction_format", "passage_instruction_for_retrieval",
           "passage_instruction_format", "train_group_size", "temperature")  # fmt: skip


def _flagembedding_kind(plan: dict[str, Any]) -> str:
    kind = plan.get("options", {}).get("model_kind")
    if kind in ("embed", "rerank"):
        return kind
    argv = " ".join(a for s in plan.get("steps", []) for a in s.get("argv", []))
    return "rerank" if ".reranker." in argv else "embed"


# -- running a script in the backend's environment ------------------------------------------------------------------
def default_launcher() -> Launcher:
    """This machine, on a GPU when there is one (launchers.local picks the one with most free memory)."""
    from launchers.gpus import available

    return launchers.local(ngpus=1 if available() else 0, stream=False)


def _python_and_env(env_name: str) -> tuple[str, dict[str, str]]:
    from .backends.base import backend_python

    try:
        from .envs import environment_for

        env = environment_for(env_name)
    except (ImportError, KeyError, ValueError):
        env = {}
    return backend_python(env_name), env


def _script_for(model: TunedModel) -> str:
    from .backends.base import script

    return script("llm_model.py" if model.kind == "llm" else "rank_model.py")


def new_folder(model: TunedModel, kind: str) -> Path:
    folder = model.target / kind / (time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4])
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def job_for(model: TunedModel, spec: dict[str, Any], folder: Path, launcher: Launcher, mode: str) -> Job:
    """Write the spec and submit one step that runs the backend's script on it; returns the Job at once."""
    python, env = _python_and_env(model.env_name)
    spec_file = folder / "spec.json"
    FileSpec(spec_file, json.dumps(spec, indent=1) + "\n").write()
    step = Step(mode, [python, _script_for(model), str(spec_file)], log=folder / "logs" / f"{mode}.log", env=env)
    return launcher.submit([step], name=f"lazytune-{mode}-{model.run_id}")


def finish(job: Job, out: Path) -> dict[str, Any]:
    """The script's answer; its own error message (exit 3) as EvalError; any other failure as JobFailed."""
    try:
        job.wait(raise_on_failure=False)
    except KeyboardInterrupt:  # Ctrl-C stops the model process too (a local job would otherwise finish first)
        job.cancel()
        raise
    try:
        result = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = None
    if result is not None and result.get("error"):
        raise EvalError(f"{result['error']} (log: {job.log_of(job.steps[0].name)})")
    if job.state is not launchers.JobState.COMPLETED or result is None:
        raise job.failure()
    return result


def check_fits(model: TunedModel, launcher: Launcher, at_once: int) -> None:
    """On CPU, `at_once` models of the base's size must fit in the free memory, else a ConfigError before starting."""
    if launcher.topology().device != "cpu" or not isinstance(launcher, launchers.LocalLauncher):
        return  # GPU memory is the backend's to report (as an error the script writes); other hosts are unknown
    import psutil

    size = sum(p.stat().st_size for p in model.base.iterdir() if p.suffix in (".safetensors", ".bin"))
    need, free = size * at_once * 1.2, psutil.virtual_memory().available
    if need > free:
        raise ConfigError(f"the models need about {need / 2**30:.1f} GiB ({at_once} x {size / 2**30:.1f} GiB of "
                          f"weights) and this machine has {free / 2**30:.1f} GiB free: use a GPU launcher (--launcher "
                          "slurm / --ngpus 1) or a machine with more memory")  # fmt: skip


# -- chat --------------------------------------------------------------------------------------------------------------
def _which(base: bool, compare: bool) -> tuple[bool, bool]:
    if base and compare:
        raise ConfigError("--base and --compare exclude each other (--compare already shows the base model)")
    return (base or compare), (not base)


def not_an_llm(model: TunedModel) -> str:
    return (f"run {model.run_id} holds a fine-tuned {KIND_NAMES[model.kind]}, not an LLM: rank passages for a query "
            "instead (lazytune chat RUN --query Q --passages FILE; Python: run.rank(query, passages))")


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("the prompt is empty: give some text to answer (--prompt 'your question')")
    return prompt


def chat(model: TunedModel, prompts: str | Sequence[str], *, base: bool = False, compare: bool = False,
         system: str | None = None, max_new_tokens: int = 128,
         launcher: Launcher | None = None) -> list[dict[str, str]]:
    """One answer per prompt from each model asked for: [{"tuned": ...}] / [{"base": ...}] / [{"base", "tuned"}]."""
    if model.kind != "llm":
        raise ConfigError(not_an_llm(model))
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ConfigError("no prompt given")
    for p in prompts:
        _check_prompt(p)
    _check_max_new(max_new_tokens)
    use_base, use_tuned = _which(base, compare)
    launcher = launcher or default_launcher()
    check_fits(model, launcher, int(use_base) + int(use_tuned))
    folder = new_folder(model, CHAT_DIR)
    spec = {**model.extra, "mode": "chat", "models": model.models(use_base, use_tuned), "prompts": prompts,
            "system": system, "max_new_tokens": max_new_tokens, "out": str(folder / "result.json")}  # fmt: skip
    result = finish(job_for(model, spec, folder, launcher, "chat"), folder / "result.json")
    return result["answers"]


def _check_max_new(n: Any) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"max_new_tokens must be a whole number >= 1, got {n!r}")


class ChatSession:
    """A conversation kept in one running model process (the interactive `lazytune chat`).

        with ChatSession(model, compare=True) as chat:
            chat.ask("Spell the digit 3")     # {"base": "...", "tuned": "..."}
            chat.reset()                      # forget the history
    """

    def __init__(self, model: TunedModel, *, base: bool = False, compare: bool = False, system: str | None = None,
                 max_new_tokens: int = 128, launcher: Launcher | None = None, timeout: float = 600.0):
        if model.kind != "llm":
            raise ConfigError(not_an_llm(model))
        _check_max_new(max_new_tokens)
        use_base, use_tuned = _which(base, compare)
        launcher = launcher or default_launcher()
        check_fits(model, launcher, int(use_base) + int(use_tuned))
        self.model, self.system, self.timeout = model, system, timeout
        self.names = [m["name"] for m in model.models(use_base, use_tuned)]
        self.history: dict[str, list[dict[str, str]]] = {n: [] for n in self.names}
        self.folder = new_folder(model, CHAT_DIR)
        self.requests, self.responses = self.folder / "requests.jsonl", self.folder / "responses.jsonl"
        self.requests.touch()
        spec = {**model.extra, "mode": "serve", "models": model.models(use_base, use_tuned), "system": system,
                "session": str(self.folder), "max_new_tokens": max_new_tokens, "out": str(self.folder / "result.json")}
        self.job = job_for(model, spec, self.folder, launcher, "chat")
        self._seen = 0
        try:
            self._wait_for(lambda r: r.get("ready"))
        except BaseException:  # Ctrl-C while loading, or it failed: no model process is left behind
            self.job.cancel()
            raise

    def _wait_for(self, match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            text = self.responses.read_text(encoding="utf-8") if self.responses.exists() else ""
            lines = text.split("\n")[:-1]  # complete lines only: the last one may be half written
            for line in lines[self._seen:]:
                self._seen += 1
                record = json.loads(line)
                if match(record):
                    return record
            if self.job.state.finished:
                finish(self.job, self.folder / "result.json")  # raises with the reason
                raise EvalError(f"the chat process ended early (log: {self.job.log_of('chat')})")
            time.sleep(0.05)
        self.close()
        raise EvalError(f"no answer from the chat process within {self.timeout:.0f} s (log: {self.job.log_of('chat')})")

    def ask(self, prompt: str) -> dict[str, str]:
        """Each model's answer to `prompt`, given the conversation so far."""
        _check_prompt(prompt)
        request_id = uuid.uuid4().hex
        for name in self.names:
            self.history[name].append({"role": "user", "content": prompt})
        request = {"id": request_id, "messages_by_model": self.history, "system": self.system}
        with open(self.requests, "a", encoding="utf-8") as f:
            f.write(json.dumps(request) + "\n")
        reply = self._wait_for(lambda r: r.get("id") == request_id)
        if reply.get("error"):
            for name in self.names:
                self.history[name].pop()
            raise EvalError(f"the model could not answer: {reply['error']}")
        for name, text in reply["answers"].items():
            self.history[name].append({"role": "assistant", "content": text})
        return reply["answers"]

    def reset(self) -> None:
        """Forget the conversation (the models stay loaded)."""
        self.history = {n: [] for n in self.names}

    def close(self) -> None:
        """Stop the model process (it also stops by itself after an hour without a question)."""
        if self.job.state.finished:
            return
        with open(self.requests, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stop": True}) + "\n")
        try:
            self.job.wait(timeout=30, raise_on_failure=False)
        finally:
            if not self.job.state.finished:
                self.job.cancel()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- embedders and rerankers -------------------------------------------------------------------------------------------
def rank(model: TunedModel, query: str, passages: Sequence[str], *,
         launcher: Launcher | None = None) -> list[dict[str, Any]]:
    """Each passage with its base and fine-tuned score (embedders: query-passage similarity; rerankers: the model's
    score), best fine-tuned score first."""
    if model.kind == "llm":
        raise ConfigError(f"run {model.run_id} trained an LLM: --query/--passages rank with embedders and rerankers; "
                          "ask it something with --prompt")  # fmt: skip
    if not isinstance(query, str) or not query.strip():
        raise ConfigError("the query is empty")
    passages = [p for p in passages if isinstance(p, str) and p.strip()]
    if not passages:
        raise ConfigError("no passage to rank")
    launcher = launcher or default_launcher()
    check_fits(model, launcher, 1)
    folder = new_folder(model, CHAT_DIR)
    spec = {**model.extra, "mode": "rank", "kind": model.kind, "models": model.models(), "query": query,
            "passages": passages, "out": str(folder / "result.json")}  # fmt: skip
    scores = finish(job_for(model, spec, folder, launcher, "rank"), folder / "result.json")["scores"]
    rows = [{"passage": p, "base": scores["base"][i], "tuned": scores["tuned"][i]} for i, p in enumerate(passages)]
    return sorted(rows, key=lambda r: -r["tuned"])


def ranking_metrics(rows: Sequence[dict[str, list[float]]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """recall@k (share of each query's positives ranked in its top k, averaged) and MRR (1 / rank of the first
    positive) of the positives among each record's positives + negatives. Ties count against the positive."""
    if not rows:
        return {}
    recall = {k: 0.0 for k in ks}
    mrr = 0.0
    for row in rows:
        negatives = row["neg"]
        # rank of a positive: 1 + the negatives and other positives that score at least as high
        ranks = sorted(1 + sum(n >= p for n in negatives) + sum(q > p for q in row["pos"]) for p in row["pos"])
        for k in ks:
            recall[k] += sum(r <= k for r in ranks) / len(ranks)
        mrr += 1 / ranks[0]
    out = {f"recall@{k}": round(recall[k] / len(rows), 6) for k in ks}
    out["mrr"] = round(mrr / len(rows), 6)
    return out


# -- eval --------------------------------------------------------------------------------------------------------------
def _eval_data(model: TunedModel, files: list[Path], folder: Path) -> dict[str, Any]:
    """Check the data fits the model kind (every problem at once, file:line) and say where the script reads it."""
    if model.kind == "llm" and model.extra["family"] == "llamafactory":
        from .backends.llamafactory.dataset_info import dataset_info

        stage = "pt" if model.extra.get("stage") == "pt" else "sft"
        try:
            entries, specs = dataset_info(files, stage, folder, True)
        except ConfigError as exc:
            raise ConfigError(f"eval data for a llamafactory {stage} model: {exc}") from exc
        for spec in specs:
            spec.write()
        names = ",".join(e.name for e in entries)
        return {"dataset": names, "dataset_dir": str(folder), "work_dir": str(folder / "work")}
    if model.kind == "llm":
        from .backends.alpacalora.checks import check_records

        try:
            check_records(files)
        except ConfigError as exc:
            raise ConfigError(f"eval data for an alpacalora model (instruction/input/output records): {exc}") from exc
        return {"data": [str(f) for f in files]}
    from .backends.flagembedding.data import check_data

    # every record needs a negative (group size 2) to rank its positives among; no batch-size rule applies here
    options = {**model.extra.get("options", {}), "train_group_size": 2, "per_device_train_batch_size": 1,
               "dataloader_drop_last": False, "knowledge_distillation": False, "validate": True}
    try:
        check_data(files, options, 1)
    except ConfigError as exc:
        raise ConfigError(f"eval data for a flagembedding {model.kind} model (query/pos/neg records): {exc}") from exc
    return {"data": [str(f) for f in files]}


def change(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, float]:
    """tuned - base for every number both have."""
    return {k: tuned[k] - base[k] for k in tuned if k != "tokens"
            and isinstance(tuned.get(k), (int, float)) and isinstance(base.get(k), (int, float))}  # fmt: skip


def evaluate(model: TunedModel, data: str | os.PathLike | Sequence[str | os.PathLike], *,
             max_samples: int | None = None, generate: bool = False, max_new_tokens: int = 64,
             launcher: Launcher | None = None, progress: str | None = None) -> dict[str, Any]:
    """Base vs fine-tuned on `data` (same formats as training); saved to <target>/lazytune_eval/<time>.json.

    LLMs: mean loss over the answer tokens and perplexity (generate=True adds exact_match, rouge-l, bleu-4 of greedy
    answers against the references); embedders and rerankers: recall@1/5/10 and MRR of the positives among the
    negatives. `max_samples` caps the records (LLaMA-Factory: per data file, as its own max_samples)."""
    from .data import resolve_data
    from .progress import watch

    if data is None or (not isinstance(data, (str, os.PathLike)) and not data):
        raise ConfigError("eval needs data (--data FILE): the same formats as training")
    if max_samples is not None and (not isinstance(max_samples, int) or isinstance(max_samples, bool)
                                    or max_samples < 1):  # fmt: skip
        raise ConfigError(f"max_samples must be a whole number >= 1, got {max_samples!r}")
    _check_max_new(max_new_tokens)
    files = resolve_data(data)
    launcher = launcher or default_launcher()
    check_fits(model, launcher, 1)
    folder = new_folder(model, EVAL_DIR)
    try:
        where = _eval_data(model, files, folder / "data")
    except ConfigError:
        _remove(folder)
        raise
    out = folder / "result.json"
    spec = {**model.extra, **where, "mode": "eval", "kind": model.kind, "models": model.models(),
            "max_samples": max_samples, "generate": generate, "max_new_tokens": max_new_tokens, "out": str(out),
            "progress": str(folder / "progress.jsonl")}  # fmt: skip
    started = time.time()
    job = job_for(model, spec, folder, launcher, "eval")
    with watch(folder / "progress.jsonl", progress, desc="eval"):
        raw = finish(job, out)
    report = summary(model, raw, files, max_samples, time.time() - started)
    given = _count_records(files)
    if given is not None and report["records"] < given and not max_samples:
        report["notes"].append(f"{given - report['records']} of the {given} records were not measured: they give no "
                               "answer token (empty, or cut off by the run's cutoff_len) or no negative to rank")
    report["records_given"] = given
    saved = folder.parent / f"{folder.name}.json"
    FileSpec(saved, json.dumps(report, indent=2) + "\n").write()
    report["saved"] = str(saved)
    return report


def _count_records(files: list[Path]) -> int | None:
    """How many records the files hold (None when a format is not one lazytune reads record by record)."""
    from .data import iter_records

    try:
        return sum(1 for path in files for _ in iter_records(path))
    except (ConfigError, OSError, ValueError):
        return None


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def summary(model: TunedModel, raw: dict[str, Any], files: list[Path], max_samples: int | None,
            seconds: float) -> dict[str, Any]:
    """The saved eval: {"base": {...}, "tuned": {...}, "change": {...}, "records": N, ...} (metric names as keys)."""
    from .text_metrics import score

    sides: dict[str, dict[str, Any]] = {}
    examples = []
    for name in ("base", "tuned"):
        if model.kind != "llm":
            sides[name] = ranking_metrics(raw["models"][name])
            continue
        got = dict(raw["models"][name])
        predictions, references = got.pop("predictions", None), got.pop("references", None)
        if predictions is not None:
            got.update(score(predictions, references))
            examples.append((name, predictions))
        sides[name] = {k: v for k, v in got.items() if k != "seconds"}
    report: dict[str, Any] = {
        "run_id": model.run_id, "backend": model.backend, "kind": model.kind, "records": raw["records"],
        "base": sides["base"], "tuned": sides["tuned"], "change": change(sides["base"], sides["tuned"]),
        "data": [str(f) for f in files], "max_samples": max_samples, "model": str(model.tuned),
        "adapter": str(model.adapter) if model.adapter else None, "notes": list(model.notes),
        "device": raw.get("device"), "seconds": round(seconds, 3), "time": time.time(),
    }  # fmt: skip
    if examples:
        refs = raw["models"]["tuned"].get("references") or []
        report["examples"] = [{"reference": r, **{n: p[i] for n, p in examples}} for i, r in enumerate(refs[:5])]
    return report


def latest_eval(target: Path) -> dict[str, Any] | None:
    """The newest saved eval of a target (None when there is none)."""
    folder = Path(target) / EVAL_DIR
    saved = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in reversed(saved):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def brief(report: dict[str, Any]) -> str:
    """One metric of an eval, base -> fine-tuned (`lazytune jobs`): loss for LLMs, MRR for embedders/rerankers."""
    key = "loss" if report.get("kind") == "llm" else "mrr"
    base, tuned = report.get("base", {}).get(key), report.get("tuned", {}).get(key)
    if not isinstance(base, (int, float)) or not isinstance(tuned, (int, float)):
        return "-"
    return f"{key} {base:.4g}->{tuned:.4g}"


def table(report: dict[str, Any]) -> str:
    """The eval as a table: metric, base, fine-tuned, change (with the better side marked)."""
    base, tuned, delta = report["base"], report["tuned"], report["change"]
    rows = [("metric", "base", "fine-tuned", "change")]
    for key in tuned:
        if key not in delta or key == "tokens":
            continue
        better = (delta[key] < 0) if key in LOWER_IS_BETTER else (delta[key] > 0)
        mark = " (better)" if better and delta[key] != 0 else ""
        rows.append((key, _num(base[key]), _num(tuned[key]), f"{delta[key]:+.4g}{mark}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"{report['records']} records from {', '.join(report['data'])}"
                 + (f" (max_samples={report['max_samples']})" if report.get("max_samples") else ""))  # fmt: skip
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
