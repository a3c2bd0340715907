"""Doc tests: the README's "Quick start (CLI)" and "Quick start (Python)" blocks run as written.

They run in a sandbox folder holding what the quick starts name: `models/Qwen2.5-0.5B-Instruct` (a tiny random
Qwen2 with the same template family, built locally) and `data/train.json` (alpaca records). With the llamafactory
environment installed the real backend trains; without it the test is skipped (`lazytune env install llamafactory`).
`LAZYTUNE_README` points the test at another file (to check a draft before it goes into the README).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import lf_data
from tests.helpers.models import env_python, tiny_model

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parent.parent / "README.md"
MODEL_NAME = "Qwen2.5-0.5B-Instruct"


def section_blocks(text: str, heading: str, languages: tuple[str, ...]) -> list[str]:
    """The fenced code blocks (in `languages`) of the section whose heading is `heading`, up to the next heading of
    the same or a higher level."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(rf"(#+)\s*{re.escape(heading)}\s*", line)), None)
    if start is None:
        return []
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    body = []
    for line in lines[start + 1:]:
        m = re.match(r"(#+)\s", line)
        if m and len(m.group(1)) <= level:
            break
        body.append(line)
    pattern = rf"^```(?:{'|'.join(languages)})\n(.*?)^```"
    return re.findall(pattern, "\n".join(body) + "\n", re.M | re.S)


def readme_blocks(heading: str, languages: tuple[str, ...]) -> list[str]:
    path = Path(os.environ.get("LAZYTUNE_README") or README)
    blocks = section_blocks(path.read_text(encoding="utf-8"), heading, languages)
    if not blocks:
        pytest.fail(f"{path} has no '## {heading}' section with a ```{languages[0]} block")
    return blocks


def make_sandbox(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    python = env_python("llamafactory")
    models = tmp_path_factory.getbasetemp() / "readme-models"
    model = tiny_model(models, "qwen2", python, name=MODEL_NAME)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / MODEL_NAME).symlink_to(model, target_is_directory=True)
    lf_data.alpaca(tmp_path / "data" / "train.json", n=8)
    return tmp_path


def run_env(sandbox: Path) -> dict[str, str]:
    return {**os.environ, "LAZYTUNE_TRAIN_TARGET_ROOT": str(sandbox), "LAZYTUNE_QUIET": "0"}


def test_section_extraction() -> None:
    text = "# T\n## Quick start (CLI)\nx\n```bash\nls\n```\n### sub\n```sh\npwd\n```\n## Next\n```bash\nno\n```\n"
    assert section_blocks(text, "Quick start (CLI)", ("bash", "sh")) == ["ls\n", "pwd\n"]
    assert section_blocks(text, "Missing", ("bash",)) == []


def test_quick_start_cli(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    script = "\n".join(readme_blocks("Quick start (CLI)", ("bash", "sh", "shell")))
    sandbox = make_sandbox(tmp_path_factory, tmp_path)
    shim = f'lazytune() {{ "{sys.executable}" -m lazytune.cli "$@"; }}\nset -euo pipefail\n'
    out = subprocess.run(["bash", "-c", shim + script], cwd=sandbox, env=run_env(sandbox), capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert (sandbox / "runs" / "sft" / "lazyllm_merge" / "config.json").is_file()
    assert "COMPLETED" in out.stdout


def test_quick_start_python(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    code = "\n".join(readme_blocks("Quick start (Python)", ("python",)))
    sandbox = make_sandbox(tmp_path_factory, tmp_path)
    out = subprocess.run([sys.executable, "-c", code], cwd=sandbox, env=run_env(sandbox), capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert str(sandbox / "runs" / "sft-py" / "lazyllm_merge") in out.stdout
    assert "COMPLETED" in out.stdout
