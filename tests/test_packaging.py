"""A non-editable wheel install works and ships the configs and scripts inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True)
    (whl,) = out.glob("lazytune-*.whl")
    return whl


def test_wheel_contains_configs_and_scripts(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for cfg in (ROOT / "configs").rglob("*"):
        if cfg.is_file() and cfg.suffix in (".yaml", ".json"):
            assert f"lazytune/configs/{cfg.relative_to(ROOT / 'configs').as_posix()}" in names
    for script in (ROOT / "lazytune" / "scripts").glob("*.py"):
        assert f"lazytune/scripts/{script.name}" in names
    assert "launchers/local.py" in names
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.slow
def test_wheel_installs_and_runs_dummy(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    code = (
        "import sys, lazytune\n"
        "from lazytune import finetune, launchers\n"
        "from lazytune.resources import configs_dir\n"
        "assert 'site-packages' in lazytune.__file__, lazytune.__file__\n"
        "assert configs_dir().is_relative_to(__import__('pathlib').Path(lazytune.__file__).parent)\n"
        "print(finetune.dummy(sys.argv[1], sys.argv[2], launcher=launchers.local(stream=False))())\n"
    )
    proc = subprocess.run([str(py), "-c", code, str(model), str(tmp_path / "out")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("lazyllm_merge")
    assert (venv / "bin" / "lazytune").exists()
