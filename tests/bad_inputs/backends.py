"""The backend matrix of the bad-input suite: one `Profile` per backend, plus the guards every case runs under.

A backend whose module is still a placeholder (not a `Finetune` subclass) is skipped with the reason; it joins the
matrix by itself as soon as its module lands.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from lazytune import finetune
from lazytune.backends.base import Finetune


@dataclass(frozen=True)
class Profile:
    """How to build a valid trainer of one backend; cases change one thing and expect a clear error."""

    name: str
    reads_data: bool  # checks the content of data files (format, columns) before starting anything
    kind: str  # what a good record looks like: "sft" (alpaca) or "embed" (query/pos/neg)
    model_type: str = "llama"
    kw: tuple[tuple[str, Any], ...] = ()  # options a valid trainer needs with the tiny data (e.g. a small eval split)

    def cls(self) -> type[Finetune]:
        cls = getattr(finetune, self.name)
        if not (isinstance(cls, type) and issubclass(cls, Finetune)):
            pytest.skip(f"finetune.{self.name} is still a placeholder; it joins the bad-input matrix when it lands")
        return cls

    def good_record(self, i: int = 0) -> dict[str, Any]:
        if self.kind == "embed":
            return {"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}", f"m{i}"]}
        return {"instruction": f"Say {i}", "input": "", "output": f"{i} {i}"}

    def other_record(self) -> dict[str, Any]:
        """A well-formed record of the *other* task (wrong columns for this backend)."""
        if self.kind == "embed":
            return {"instruction": "Say 1", "input": "", "output": "1"}
        return {"query": "q", "pos": ["p"], "neg": ["n"]}

    def missing_column_record(self) -> dict[str, Any]:
        """A record without the column this backend cannot train without."""
        if self.kind == "embed":
            return {"query": "q", "neg": ["n"]}
        return {"instruction": "Say 1", "input": ""}

    def model(self, root: Path) -> Path:
        """A folder that passes as a model for planning (config.json + tokenizer files, no weights)."""
        folder = root / f"model-{self.name}"
        folder.mkdir(parents=True, exist_ok=True)
        arch = {"llama": "LlamaForCausalLM", "bert": "BertModel"}[self.model_type]
        config = {"model_type": self.model_type, "architectures": [arch], "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 512}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "tokenizer.json").write_text("{}")
        (folder / "tokenizer_config.json").write_text("{}")
        return folder

    def good_data(self, root: Path, name: str = "train.jsonl", n: int = 8) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(self.good_record(i)) + "\n" for i in range(n)))
        return path

    def trainer(self, model: Path, target: Path, **kw: Any) -> Finetune:
        return self.cls()(model, target, **{**dict(self.kw), **kw})


PROFILES = {
    # strict: checked like a real backend (by default the dummy is LazyLLM's lenient stand-in)
    "dummy": Profile("dummy", reads_data=False, kind="sft", kw=(("strict", True),)),
    "llamafactory": Profile("llamafactory", reads_data=True, kind="sft", kw=(("template", "default"),)),
    "alpacalora": Profile("alpacalora", reads_data=True, kind="sft", kw=(("val_set_size", 2),)),
    "flagembedding": Profile("flagembedding", reads_data=True, kind="embed", model_type="bert"),
}
ALL = list(PROFILES)
DATA_READERS = [n for n, p in PROFILES.items() if p.reads_data]


def tree(root: Path) -> dict[str, tuple[int, int]] | None:
    """Every file and folder under `root` with (size, mtime_ns); None when `root` does not exist."""
    if not root.exists():
        return None
    out = {".": (0, root.stat().st_mtime_ns)}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


@contextmanager
def nothing_started(target: Path) -> Iterator[list[list[str]]]:
    """Assert that the block starts no process and leaves `target` exactly as it was (or absent).

    Process starts are recorded by wrapping `subprocess.Popen` (how lazytune and the launchers start every
    process; an `nvidia-smi` GPU query is allowed) and cross-checked with the test process's children.
    """
    started: list[list[str]] = []
    real_init: Callable[..., None] = subprocess.Popen.__init__

    def spy(self: subprocess.Popen, args: Any, *a: Any, **k: Any) -> None:
        argv = [str(x) for x in args] if isinstance(args, (list, tuple)) else [str(args)]
        if not argv[0].endswith("nvidia-smi"):
            started.append(argv)
        real_init(self, args, *a, **k)

    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    before = tree(target)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess.Popen, "__init__", spy)
        yield started
    assert started == [], f"a process was started before the error: {started}"
    new_children = {p.pid for p in me.children(recursive=True)} - children_before
    assert not new_children, f"child processes appeared: {new_children}"
    assert tree(target) == before, f"the target {target} was changed"


def expect_error(
    profile: Profile, model: Path, target: Path, data: Any, match: str, error: type[Exception] | None = None, **kw: Any
) -> Exception:
    """Build the trainer and call it as a user would; it must raise `error` matching `match` and start nothing."""
    from lazytune import ConfigError

    with nothing_started(target), pytest.raises(error or ConfigError, match=match) as info:
        trainer = profile.trainer(model, target, **kw)
        trainer(data)
    return info.value
