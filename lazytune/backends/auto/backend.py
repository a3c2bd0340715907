"""finetune.auto: pick the backend and its parameters from the model's real size and the GPUs, and say why.

    trainer = finetune.auto("models/Qwen2.5-7B", "runs/sft", ctx_len=2048, batch_size=32)
    print(trainer.explain())       # facts, estimate per GPU, the choice, the alternatives rejected
    merged = trainer("train.json")  # runs the chosen backend (finetune.llamafactory, alpacalora or flagembedding)

The decision is `decide.decide` (a pure function); this class gathers the facts (config.json, nvidia-smi or
the launcher, overrides), maps the decision onto the chosen backend's own option names, builds that backend's
trainer and forwards plan / start / call to it. Keywords the user passes go to the backend unchanged (checked by its
whitelist) and are never overridden: a fixed micro batch or ZeRO stage is taken as given and the rest fitted around it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from launchers import Launcher, LocalLauncher

from ... import envs
from ...config import settings
from ...errors import ConfigError
from ...launching import LOCAL_NAMES, make_launcher
from ...model import ModelFolder
from ...options import Option, OptionSpec
from ...plan import Plan
from ..base import DataArg, Finetune, as_launcher, combine_problems, resolve_model
from ..flagembedding.args import OPTION_SPECS
from .backends import DRIVEN, Keys, backend_class, choose_backend, deepspeed_config, zero_stage
from .decide import Decision, Request, decide
from .gpu_table import _ram_gb, hardware
from .memory import host_estimate, usable_gb
from .sizing import model_facts


class AutoFinetune:
    """`finetune.auto(base_model, target_path, ...)`: decides, then delegates to the chosen backend's trainer.

    Own keywords: ctx_len, batch_size (global, all GPUs together), lora_r, gpu_type / gpu_memory_gb / ngpus
    (override what the launcher or nvidia-smi says), backend (force one), allow_quantization (QLoRA allowed),
    kind ('causal', 'vlm', 'embed', 'rerank'; default from config.json). Everything else goes to the backend.
    """

    name = "auto"

    @classmethod
    def option_spec(cls) -> OptionSpec:
        """auto's own keywords (for the CLI and --list-options); every other key goes to the chosen backend."""
        return OptionSpec("auto", [
            Option("ctx_len", int, 1024, "tokens per sample (LLaMA-Factory cutoff_len; passage length for embedders)"),
            Option("batch_size", int, 32, "global batch: micro batch x gradient accumulation x GPUs"),
            Option("lora_r", int, 8, "LoRA rank"),
            Option("gpu_type", str, None, "GPU type instead of what the launcher reports (e.g. A100-80G, H100, 4090)"),
            Option("gpu_memory_gb", float, None, "memory per GPU in GB instead of the table's or nvidia-smi's"),
            Option("ngpus", int, None, "GPUs to plan for (without a launcher: how many local GPUs to use)"),
            Option("backend", str, None, "force a backend", choices=tuple(DRIVEN)),
            Option("allow_quantization", bool, True, "QLoRA may be chosen when bf16 LoRA does not fit"),
            Option("kind", str, None, "model kind instead of config.json's",
                   choices=("causal", "vlm", "embed", "rerank")),
            Option("overwrite", bool, False, "replace the results already in the target"),
        ])  # fmt: skip

    def __init__(self, base_model: str | os.PathLike, target_path: str | os.PathLike,
                 merge_path: str | os.PathLike | None = None, ctx_len: int = 1024, batch_size: int = 32,
                 lora_r: int = 8, launcher: Launcher | None = None, *, gpu_type: str | None = None,
                 gpu_memory_gb: float | None = None, ngpus: int | None = None, backend: str | None = None,
                 allow_quantization: bool = True, kind: str | None = None, overwrite: bool = False,
                 source: str | None = None, model_type: str | None = None, **kw: Any):
        if isinstance(merge_path, str) and merge_path.strip().lower() in HUB_SOURCES and source is None:
            source, merge_path = merge_path, None  # LazyLLM's third positional argument is `source`
        kind = _lazyllm_model_type(model_type, kind)
        launcher = as_launcher(launcher)
        for label, value in (("ctx_len", ctx_len), ("batch_size", batch_size), ("lora_r", lora_r)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{label} must be a whole number >= 1, got {value!r}")
        if kind not in (None, "causal", "vlm", "embed", "rerank"):
            raise ConfigError(f"kind must be 'causal', 'vlm', 'embed' or 'rerank', got {kind!r}")
        self._notes: list[str] = []
        try:
            path = resolve_model(base_model, need_config=False)
        except ConfigError as exc:  # with the keywords no backend knows: one error lists everything
            raise combine_problems(exc, unknown_anywhere(kw)) from None
        model = ModelFolder.read(path)  # read once, shared with the trainer
        if source is not None:
            self._notes.append(f"source={source!r} ignored: lazytune never downloads a model, it trains the local "
                               f"folder {model}")
        facts = model_facts(model)
        self.facts = replace(facts, kind=kind) if kind else facts
        self.backend, why_backend = choose_backend(self.facts, backend)
        keys = DRIVEN[self.backend]
        cls = backend_class(self.backend)
        given = self._canonical(cls, kw)
        self.hardware = hardware(launcher, gpu_type, gpu_memory_gb, ngpus, settings().default_launcher,
                                 settings().slurm_partition)
        request = self._request(keys, given, ctx_len, batch_size, lora_r, allow_quantization)
        self.decision: Decision = decide(self.facts, self.hardware, request)
        self.decision.reasons.insert(0, why_backend)
        self._check_host_ram(launcher, gpu_type)
        self._extra_notes()
        chosen = self._chosen_kw(keys, given)
        if self.backend == "flagembedding" and "model_kind" not in kw:
            chosen["model_kind"] = self.facts.kind
        self.chosen = chosen
        self.trainer: Finetune = cls(model, target_path, merge_path=merge_path, launcher=launcher or self._launcher(),
                                     overwrite=overwrite, **kw, **chosen)  # fmt: skip

    # -- deciding --------------------------------------------------------------------------------------------------
    def _canonical(self, cls: type[Finetune], kw: dict[str, Any]) -> dict[str, Any]:
        """The user's keywords under the backend's own names (aliases resolved); unknown keys stay as given."""
        if self.backend == "flagembedding":
            spec = cls.option_spec(self.facts.kind if kw.get("model_kind") is None else kw["model_kind"])
        else:
            spec = cls.option_spec()
        given = {}
        for key, value in kw.items():
            name = spec.canonical(key)
            try:  # typed as the backend will type it; a bad value is reported by the backend's own check
                given[name or key] = spec.options[name].coerce(value) if name else value
            except ValueError:
                given[name or key] = value
        return given

    def _request(self, keys: Keys, given: dict[str, Any], ctx_len: int, batch_size: int, lora_r: int,
                 allow_quantization: bool) -> Request:
        """The request with every value the user fixed through the backend's own keys."""
        checkpointing = given.get(keys.checkpointing) if keys.checkpointing else False
        if checkpointing is not None and keys.checkpointing_off:
            checkpointing = not checkpointing
        method, bits = None, 4
        if keys.method and given.get(keys.method):
            method = "lora" if given[keys.method] in ("lora", "oft") else "full"
        if keys.quantization and given.get(keys.quantization):
            method, bits = "qlora", int(given[keys.quantization])
        zero = zero_stage(given[keys.deepspeed]) if keys.deepspeed and given.get(keys.deepspeed) else None
        sequences = 1
        if self.backend == "flagembedding":
            group = int(given.get("train_group_size") or 8)  # FlagEmbedding's default group size
            sequences = group + (1 if self.facts.kind == "embed" else 0)
            room = self.facts.max_positions
            if room and self.facts.kind == "rerank":
                # a reranker reads query + passage as ONE sequence: the passage gets what the query leaves
                query = _whole(given.get("query_max_len")) or OPTION_SPECS["rerank"].options["query_max_len"].default
                room = max(1, room - query)
                if ctx_len > room:
                    self._notes.append(f"ctx_len {ctx_len} > the {room} positions left after the query: "
                                       f"query_max_len {query} + passage_max_len {room} = the model's "
                                       f"{self.facts.max_positions} positions")
                    ctx_len = room
            elif room and ctx_len > room:
                self._notes.append(f"ctx_len {ctx_len} > the model's {room} positions: passages are cut at {room}")
                ctx_len = room
        ctx = _whole(given.get(keys.ctx_len)) or ctx_len
        if self.backend == "alpacalora" and method == "qlora":
            raise ConfigError("alpacalora has no quantization: use backend='llamafactory' for QLoRA")
        rank = _whole(given.get(keys.lora_r or "")) or lora_r
        return Request(
            missing=self._missing_packages(),
            ctx_len=ctx, batch_size=batch_size, lora_r=rank, sequences_per_example=sequences,
            allow_quantization=allow_quantization and keys.quantization is not None, method=method,
            micro_batch=_whole(given.get(keys.micro_batch)), grad_accum=_whole(given.get(keys.grad_accum or "")),
            checkpointing=checkpointing, zero=zero, quant_bits=bits, zero_stages=keys.zero_stages,
            lora_dropout=float(given.get("lora_dropout", 0.05) or 0) > 0,
        )  # fmt: skip

    def _missing_packages(self) -> frozenset[str]:
        """Which of the packages a GPU set-up may need (bitsandbytes, deepspeed) the backend's environment lacks;
        asked only when there are GPUs (nothing else needs them). Unknown: none counted missing."""
        if not self.hardware.count:
            return frozenset()
        env = backend_class(self.backend).env_name or self.backend
        try:
            found = envs.installed_versions(env, ("bitsandbytes", "deepspeed"))
        except envs.EnvError:
            return frozenset()
        return frozenset(name for name, version in found.items() if not version)

    def _chosen_kw(self, keys: Keys, given: dict[str, Any]) -> dict[str, Any]:
        """The decision as the backend's keywords, leaving out every key the user set."""
        s = self.decision.setup
        out: dict[str, Any] = {keys.micro_batch: s.micro_batch, keys.ctx_len: s.ctx_len}
        if keys.grad_accum:
            out[keys.grad_accum] = s.grad_accum
        if keys.global_batch:
            out[keys.global_batch] = self.decision.global_batch
        if keys.lora_r and s.method != "full":
            out[keys.lora_r] = s.lora_r
        if keys.checkpointing:
            out[keys.checkpointing] = s.checkpointing != keys.checkpointing_off
        if keys.quantization and s.method == "qlora":
            out[keys.quantization] = s.quant_bits
        if keys.deepspeed and s.zero:
            out[keys.deepspeed] = deepspeed_config(s.zero)
        return {k: v for k, v in out.items() if k not in given}

    def _check_host_ram(self, launcher: Launcher | None, gpu_type: str | None) -> None:
        """Host RAM of the run (training processes, then the LoRA merge on the CPU) into the decision; refused when
        it does not fit this machine's RAM. Checked only where the run happens on this machine."""
        s = self.decision.setup
        per_node = launcher.topology().nproc_per_node if launcher is not None else max(1, s.ngpus)
        merge = self.backend in ("llamafactory", "alpacalora", "collie")
        full_copy = self.backend == "alpacalora" and bool(s.zero)  # the HF Trainer under DeepSpeed: no device_map
        host = host_estimate(self.facts, s, per_node, merge, full_copy)
        here = isinstance(launcher, LocalLauncher) or (
            launcher is None and gpu_type is None and settings().default_launcher in LOCAL_NAMES)
        ram = _ram_gb() if here else None
        self.decision.host, self.decision.host_ram_gb = host, ram
        if ram is not None and host.total > usable_gb(ram, "cpu"):
            raise ConfigError(
                f"finetune.auto: {self.facts.name} needs {host.describe()}, more than the "
                f"{usable_gb(ram, 'cpu'):.0f} GB usable of this machine's {ram:.0f} GB RAM. Run it where there is "
                "more RAM (the merge needs about 2 bytes per parameter), or with fewer processes per node."
            )

    def _extra_notes(self) -> None:
        s, f = self.decision.setup, self.facts
        self.decision.reasons += self._notes
        if s.zero and "deepspeed" not in self.decision.request.missing:
            self.decision.reasons.append("DeepSpeed ZeRO: its config is inlined into the backend's YAML")
        if f.max_positions and s.ctx_len > f.max_positions:
            self.decision.reasons.append(f"ctx_len {s.ctx_len} exceeds the model's {f.max_positions} positions")
        if self.backend == "flagembedding":
            self.decision.reasons.append(f"ctx_len {s.ctx_len} is the passage length; an example is "
                                         f"{s.sequences_per_example} sequences (query + passages) in the estimate")

    def _launcher(self) -> Launcher:
        """A launcher for exactly the GPUs chosen (when the user gave none)."""
        return make_launcher(ngpus=self.decision.setup.ngpus)

    # -- what a trainer offers --------------------------------------------------------------------------------------
    def explain(self) -> str:
        """The facts, the estimate per GPU, the choice and why, the alternatives rejected (plain text)."""
        passed = ", ".join(f"{k}={_short(v)}" for k, v in self.chosen.items())
        return f"finetune.auto -> finetune.{self.backend}({passed})\n{self.decision.explain()}"

    def plan(self, data: DataArg = None, valset: DataArg = None) -> Plan:
        """The chosen backend's plan, with the explanation in its notes."""
        plan = self.trainer.plan(data, valset)
        plan.notes += [f"auto: {line}" for line in self.explain().splitlines()]
        return plan

    def start(self, data: DataArg = None, plan: Plan | None = None, valset: DataArg = None) -> Any:
        return self.trainer.start(data, plan=plan or self.plan(data, valset))

    def __call__(self, data: DataArg = None, valset: DataArg = None) -> Any:
        run = self.start(data, valset=valset)
        return run.wait() if self.trainer.launcher.sync else run

    @property
    def launcher(self) -> Launcher:
        return self.trainer.launcher

    @property
    def options(self) -> dict[str, Any]:
        return self.trainer.options

    @property
    def base_model(self) -> Path:
        return self.trainer.base_model

    @property
    def target(self) -> Any:
        return self.trainer.target

    def __repr__(self) -> str:
        return f"finetune.auto -> {self.trainer!r}"


#: LazyLLM's model hubs (`finetune.auto(base, target, source)`): accepted, never used (nothing is downloaded).
HUB_SOURCES = ("huggingface", "modelscope", "hf", "ms", "local")
#: LazyLLM's model_type names -> auto's `kind`; None: LazyLLM refuses to fine-tune them too.
LAZYLLM_MODEL_TYPES: dict[str, str | None] = {
    "llm": "causal", "vlm": "vlm", "embed": "embed", "rerank": "rerank", "reranker": "rerank",
    "tts": None, "stt": None, "sd": None, "ocr": None, "cross_modal_embed": None,
}  # fmt: skip


def _lazyllm_model_type(model_type: str | None, kind: str | None) -> str | None:
    """auto's `kind` for LazyLLM's `model_type=` keyword (both given: they must agree)."""
    if model_type is None:
        return kind
    key = str(model_type).strip().lower()
    if key not in LAZYLLM_MODEL_TYPES:
        known = ", ".join(repr(k) for k in LAZYLLM_MODEL_TYPES)
        raise ConfigError(f"model_type={model_type!r}: expected one of {known} (LazyLLM's names), or kind=")
    mapped = LAZYLLM_MODEL_TYPES[key]
    if mapped is None:
        raise ConfigError(f"model_type={model_type!r}: fine-tuning {key} models is not supported (nor in LazyLLM)")
    if kind is not None and kind != mapped:
        raise ConfigError(f"model_type={model_type!r} means kind={mapped!r}, but kind={kind!r} was given")
    return mapped


def unknown_anywhere(kw: dict[str, Any]) -> list[str]:
    """Keywords neither auto nor any backend it may choose knows, each with a did-you-mean."""
    specs = [AutoFinetune.option_spec(), *(backend_class(b).option_spec() for b in DRIVEN)]
    problems = []
    for key in kw:
        if any(key in spec for spec in specs):
            continue
        close = sorted({c for spec in specs for c in spec.suggestions(key)}, key=lambda c: (len(c), c))[:3]
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        problems.append(f"unknown option {key!r} for auto (no backend takes it){hint}")
    return problems


def _whole(value: Any) -> int | None:
    """A user's value the decision can use (a bad one is left to the backend's own check, which names it)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _short(value: Any) -> str:
    return "{...DeepSpeed config...}" if isinstance(value, dict) else repr(value)
