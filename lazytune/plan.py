"""A Plan: the files a run writes and the steps it runs, as plain data you can print before running anything."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launchers import Step, Topology
from launchers.secrets import mask_secret

from .errors import PlanWriteError


@dataclass(frozen=True)
class FileSpec:
    """A file the plan writes before its steps start."""

    path: Path
    content: str

    def write(self) -> None:
        """Write atomically (temp file + rename): a failed write never leaves a half file behind."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class Target:
    """Where a run's results go: `root/lazyllm_lora`, `root/lazyllm_merge`, `root/lazytune_run.json`."""

    root: Path
    lora: Path
    merge: Path
    owns_root: bool = True  # False when the user named .../lazyllm_lora: its parent may hold other things
    url: str | None = None  # target_path given as a URL: results are made in `root`, then the merge is uploaded there

    @property
    def manifest(self) -> Path:
        return self.root / "lazytune_run.json"

    @property
    def runs(self) -> Path:
        return self.root / "lazytune_runs"


@dataclass
class Plan:
    """Everything a run will do. `print(plan)` shows each file's content and each step's argv."""

    backend: str
    run_id: str
    target: Target
    run_dir: Path
    base_model: Path
    data: list[Path]
    options: dict[str, Any]
    topology: Topology
    files: list[FileSpec] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    result: Path | None = None  # what the trainer call returns (merge folder, or the model folder)
    notes: list[str] = field(default_factory=list)
    eval_data: list[Path] = field(default_factory=list)  # evaluation data files (backends that take a valset)

    def write_files(self) -> None:
        """Write every file of the plan; a full disk or a permission problem becomes a clear PlanWriteError."""
        for spec in self.files:
            try:
                spec.write()
            except OSError as exc:
                reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
                raise PlanWriteError(exc.errno or 0, f"cannot write {spec.path}: {reason}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "run_id": self.run_id,
            "base_model": str(self.base_model),
            "data": [str(d) for d in self.data],
            **({"eval_data": [str(d) for d in self.eval_data]} if self.eval_data else {}),
            "target": {"root": str(self.target.root), "lora": str(self.target.lora), "merge": str(self.target.merge),
                       "url": self.target.url},
            "run_dir": str(self.run_dir),
            "result": str(self.result) if self.result else None,
            "options": self.options,
            "topology": {**self.topology.__dict__, "world_size": self.topology.world_size},
            "files": [str(f.path) for f in self.files],
            "steps": [
                {
                    "name": s.name,
                    "argv": list(s.argv),
                    "env": {k: mask_secret(k, v) for k, v in s.env.items()},
                    "cwd": str(s.cwd) if s.cwd else None,
                    "log": str(s.log),
                    "distributed": s.distributed,
                    **({"torchrun": True} if s.torchrun else {}),
                }
                for s in self.steps
            ],
            "notes": self.notes,
        }

    def __str__(self) -> str:
        out = [
            f"lazytune plan  backend={self.backend}  run={self.run_id}",
            f"  base model : {self.base_model}",
            f"  data       : {', '.join(map(str, self.data)) or '-'}",
            f"  target     : {self.target.root}",
            f"  lora       : {self.target.lora}",
            f"  merge      : {self.target.merge}",
            f"  returns    : {self.result}",
            f"  hardware   : {self.topology.describe()}",
            f"  options    : {json.dumps(self.options, sort_keys=True, default=str)}",
        ]
        out += [f"  note       : {n}" for n in self.notes]
        for spec in self.files:
            out.append(f"\n--- file {spec.path} ---")
            out.append(spec.content.rstrip("\n"))
        for step in self.steps:
            out.append("")
            out.append(step.describe())
        return "\n".join(out)
