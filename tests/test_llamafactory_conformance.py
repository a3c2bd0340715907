"""Conformance with LLaMA-Factory v0.9.5's own data: for every demo file LF ships (tests/fixtures/llamafactory/data,
the first records of each; see its README), the entry lazytune writes and LF's own entry from LF's
data/dataset_info.json give the same rows through LF's own loader (run in the llamafactory environment), plus
variants that stress the whole-file rules. LF's v1-engine files are refused at plan time, naming file and line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lazytune import DataError
from tests.helpers.models import env_python
from tests.test_llamafactory_plan import file_of, plan_of

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures" / "llamafactory" / "data"
LF_INFO = json.loads((FIXTURES / "dataset_info.json").read_text(encoding="utf-8"))
DEMOS = {name: e for name, e in LF_INFO.items() if (FIXTURES / e.get("file_name", "-")).is_file()}
V1_FILES = ("v1_sft_demo.jsonl", "v1_dpo_demo.jsonl", "reason_tool_use_demo_50.jsonl")
MEDIA = ("images", "videos", "audios")


def stage_of(entry: dict) -> str:
    if entry.get("ranking"):
        return "dpo"
    cols = entry.get("columns", {})
    if "kto_tag" in cols:
        return "kto"
    if cols.get("prompt") == "text":
        return "pt"
    return "sft"


def data_copy(root: Path) -> Path:
    """The fixtures in a private folder, with an empty stand-in for every media file (LF's loader only checks that
    they exist; the real pictures and videos are not committed)."""
    data = root / "data"
    shutil.copytree(FIXTURES, data)
    for path in data.glob("mllm_*.json"):
        for rec in json.loads(path.read_text(encoding="utf-8")):
            for col in MEDIA:
                for name in rec.get(col, []):
                    (data / name).parent.mkdir(parents=True, exist_ok=True)
                    (data / name).touch()
    return data


def variants(data: Path) -> dict[str, tuple[Path, str]]:
    """Stress files of our own, each with the LF entry that describes it: (file, LF demo name)."""
    out = {}
    dpo = json.loads((data / "dpo_en_demo.json").read_text(encoding="utf-8"))
    with_system = [r for r in dpo if r["conversations"][0]["from"] == "system"]
    assert with_system, "the fixture must hold records with a system message"
    late = data / "late" / "dpo_system_late.json"  # records with a system message only after the others
    late.parent.mkdir()
    late.write_text(json.dumps([r for r in dpo if r not in with_system] + with_system), encoding="utf-8")
    out["dpo_system_late"] = (late, "dpo_en_demo")
    glaive = json.loads((data / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    for rec in glaive[: len(glaive) // 2]:
        del rec["tools"]  # tools only in the later records
    tools = data / "late" / "glaive_tools_late.jsonl"
    tools.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in glaive), encoding="utf-8")
    out["glaive_tools_late"] = (tools, "glaive_toolcall_en_demo")
    mm = data / "nested" / "deeper" / "mllm_sub.json"  # media in sub-folders of the data file's folder
    mm.parent.mkdir(parents=True)
    recs = json.loads((data / "mllm_demo.json").read_text(encoding="utf-8"))
    for i, rec in enumerate(recs):
        rec["images"] = [f"pics/{i}/{Path(n).name}" for n in rec["images"]]
        for name in rec["images"]:
            (mm.parent / name).parent.mkdir(parents=True, exist_ok=True)
            (mm.parent / name).touch()
    mm.write_text(json.dumps(recs[::-1]), encoding="utf-8")
    out["mllm_sub_folders_reversed"] = (mm, "mllm_demo")
    return out


def lf_rows(jobs: list[dict], work: Path) -> dict:
    (work / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-datasets")}
    proc = subprocess.run([env_python("llamafactory"), str(Path(__file__).parent / "helpers" / "lf_rows.py"),
                           str(work / "jobs.json"), str(work / "rows.json")],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((work / "rows.json").read_text(encoding="utf-8"))


def lazytune_job(tmp_path: Path, data_file: Path, stage: str, job_id: str) -> dict:
    plan = plan_of(tmp_path / job_id, data_file, stage=stage)
    info = json.loads(file_of(plan, "dataset_info.json"))
    (name, entry), = info.items()
    train = yaml.safe_load(file_of(plan, "train.yaml"))
    return {"id": job_id, "dataset_dir": train["dataset_dir"], "media_dir": train.get("media_dir"), "name": name,
            "info": entry}  # fmt: skip


def test_every_lf_demo_file_gives_lf_s_rows(tmp_path: Path) -> None:
    data = data_copy(tmp_path)
    jobs, pairs, unsupervised = [], [], set()
    for name, entry in DEMOS.items():
        stage = stage_of(entry)
        if stage == "pt":
            unsupervised.add(f"lt-{name}")  # pretraining text has no response
        jobs.append({"id": f"lf-{name}", "dataset_dir": str(data), "media_dir": None, "name": name, "info": entry})
        jobs.append(lazytune_job(tmp_path, data / entry["file_name"], stage, f"lt-{name}"))
        pairs.append((f"lf-{name}", f"lt-{name}"))
    for vname, (path, demo) in variants(data).items():
        entry = {**DEMOS[demo], "file_name": str(path)}
        jobs.append({"id": f"lf-{vname}", "dataset_dir": str(path.parent), "media_dir": str(path.parent),
                     "name": vname, "info": entry})  # fmt: skip
        jobs.append(lazytune_job(tmp_path, path, stage_of(entry), f"lt-{vname}"))
        pairs.append((f"lf-{vname}", f"lt-{vname}"))
    rows = lf_rows(jobs, tmp_path)
    problems = []
    for lf, lt in pairs:
        if "error" in rows[lf] or "error" in rows[lt]:
            problems.append(f"{lf}: {rows[lf].get('error')} / {lt}: {rows[lt].get('error')}")
        elif rows[lf]["rows"] != rows[lt]["rows"]:
            problems.append(f"{lt}: rows differ from LF's entry")
        elif any(not r["_prompt"] or not (r["_response"] or lt in unsupervised) for r in rows[lt]["rows"]):
            problems.append(f"{lt}: LF's converter skipped records")
    assert not problems, "\n".join(problems)
    assert len(pairs) == len(DEMOS) + 3 >= 16


@pytest.mark.parametrize("name", V1_FILES)
def test_lf_v1_engine_files_are_refused_at_plan_time(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match=rf"{name}, line 1: .*v1 engine"):
        plan_of(tmp_path, FIXTURES / name)
