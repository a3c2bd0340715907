"""Per-backend environments (lazytune/envs.py, `lazytune env ...`).

Unit tests use a throw-away LAZYTUNE_HOME. `test_fresh_install_*` builds a real venv from a wheel made here (no
network). The `slow` tests import each backend in its real managed environment under the default home; they skip
an environment that is not installed unless LAZYTUNE_REQUIRE_ENVS names it ("1": all; CI installs envs first).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lazytune import envs
from lazytune.commands import env as env_command


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LAZYTUNE_HOME and no interpreter overrides."""
    monkeypatch.setenv("LAZYTUNE_HOME", str(tmp_path / "lt home"))
    for name in envs.BACKENDS:
        monkeypatch.delenv(envs.python_variable(name), raising=False)
    return tmp_path / "lt home"


def fake_installed(name: str, *, stamp: bool = True, spec_hash: str | None = None) -> Path:
    """A managed env folder whose python is this interpreter (a symlink), with or without its stamp."""
    root = envs.env_dir(name)
    python = envs.env_python(root)
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    if stamp:
        digest = spec_hash or envs.spec_hash(envs.get_spec(name), "cpu")
        (root / envs.STAMP_NAME).write_text(json.dumps({"spec_hash": digest, "variant": "cpu"}))
    return python


# --- lookup ------------------------------------------------------------------------------------------------------


def test_backends_cover_the_issue() -> None:
    assert set(envs.BACKENDS) == {"llamafactory", "llamafactory-ppo", "alpacalora", "flagembedding", "collie"}
    for name, spec in envs.BACKENDS.items():
        assert spec.name == name
        assert spec.groups[0].requirements == (envs.TORCH,), "torch first, pinned"
        assert spec.imports and spec.report
    collie = [r for g in envs.BACKENDS["collie"].groups for r in g.requirements]
    assert {"transformers==4.40.2", "peft==0.10.0", "collie-lm==1.0.7"} <= set(collie)
    lf = envs.BACKENDS["llamafactory"]
    assert PipGroupNoDeps("llamafactory==0.9.5") in lf.groups
    assert "torchvision" in lf.forbidden and [s.module for s in lf.standins] == ["torchaudio"]
    ppo = [r for g in envs.BACKENDS["llamafactory-ppo"].groups for r in g.requirements]
    assert "trl==0.9.6" in ppo
    fe = [r for g in envs.BACKENDS["flagembedding"].groups for r in g.requirements]
    assert "flagembedding==1.4.2" in fe and not any("[finetune]" in r for r in fe)
    assert envs.torch_requirement(False) == "torch==2.13.0"


def PipGroupNoDeps(req: str) -> envs.PipGroup:  # noqa: N802 - reads like the constructor it builds
    return envs.PipGroup((req,), no_deps=True)


def test_python_variable() -> None:
    assert envs.python_variable("collie") == "LAZYTUNE_COLLIE_PYTHON"
    assert envs.python_variable("llamafactory-ppo") == "LAZYTUNE_LLAMAFACTORY_PPO_PYTHON"


def test_env_dir_follows_lazytune_home_at_call_time(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert envs.env_dir("collie") == home / "envs" / "collie"
    monkeypatch.setenv("LAZYTUNE_HOME", str(home / "other"))
    assert envs.env_dir("collie") == home / "other" / "envs" / "collie"
    monkeypatch.delenv("LAZYTUNE_HOME")
    assert envs.env_dir("alpacalora") == Path("~/.lazytune/envs/alpacalora").expanduser()


def test_unknown_name_suggests(home: Path) -> None:
    with pytest.raises(envs.UnknownEnvError, match="Did you mean llamafactory"):
        envs.env_dir("llamafactroy")
    with pytest.raises(ValueError, match="Known: llamafactory"):
        envs.install("nope")


def test_python_for_a_name_without_spec(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert envs.python_for("dummy") == sys.executable
    monkeypatch.setenv("LAZYTUNE_DUMMY_PYTHON", "/x/python")
    assert envs.python_for("dummy") == "/x/python"


def test_python_for_precedence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 3. nothing installed: this interpreter
    assert envs.python_for("collie") == sys.executable
    # a half-built env (no stamp) is not used
    python = fake_installed("collie", stamp=False)
    assert envs.python_for("collie") == sys.executable
    # 2. installed (stamp present)
    (envs.env_dir("collie") / envs.STAMP_NAME).write_text(json.dumps({"spec_hash": "x", "variant": "cpu"}))
    assert envs.python_for("collie") == str(python)
    # 1. the variable wins
    monkeypatch.setenv("LAZYTUNE_COLLIE_PYTHON", "/opt/collie/bin/python")
    assert envs.python_for("collie") == "/opt/collie/bin/python"
    # other backends are unaffected
    assert envs.python_for("alpacalora") == sys.executable


def test_python_for_is_a_pure_lookup(home: Path) -> None:
    envs.python_for("llamafactory")
    assert not home.exists(), "python_for must not create anything"


def test_corrupt_stamp_means_not_installed(home: Path) -> None:
    fake_installed("alpacalora", stamp=False)
    (envs.env_dir("alpacalora") / envs.STAMP_NAME).write_text("{not json")
    assert envs.python_for("alpacalora") == sys.executable
    assert envs.status("alpacalora")["state"] == "missing"


def test_spec_hash() -> None:
    spec = envs.BACKENDS["collie"]
    digest = envs.spec_hash(spec, "cpu")
    assert digest == envs.spec_hash(spec, "cpu")
    assert digest != envs.spec_hash(spec, "cuda")
    assert len({envs.spec_hash(s, "cpu") for s in envs.BACKENDS.values()}) == len(envs.BACKENDS)
    changed = envs.EnvSpec(**{**spec.__dict__, "groups": (*spec.groups, envs.PipGroup(("six",)))})
    assert envs.spec_hash(changed, "cpu") != digest
    # how it is checked or run does not change what is installed
    relabelled = envs.EnvSpec(**{**spec.__dict__, "imports": ("collie",), "environment": (("A", "1"),)})
    assert envs.spec_hash(relabelled, "cpu") == digest


def test_status_installed_outdated_missing(home: Path) -> None:
    assert envs.status("collie")["state"] == "missing"
    fake_installed("collie")
    assert envs.status("collie")["state"] == "installed"
    fake_installed("flagembedding", spec_hash="0123456789abcdef")
    assert envs.status("flagembedding")["state"] == "outdated"
    assert envs.python_for("flagembedding") != sys.executable, "an outdated env is still used until rebuilt"
    states = {row["name"]: row["state"] for row in envs.list_envs()}
    assert states == {
        "llamafactory": "missing",
        "llamafactory-ppo": "missing",
        "alpacalora": "missing",
        "flagembedding": "outdated",
        "collie": "installed",
    }


def test_environment_for() -> None:
    assert envs.environment_for("llamafactory-ppo") == {"DISABLE_VERSION_CHECK": "1"}
    assert envs.environment_for("collie") == {}


def test_relocate_rewrites_scripts(tmp_path: Path) -> None:
    old, new = tmp_path / ".x.building", tmp_path / "x"
    (new / "bin").mkdir(parents=True)
    script = new / "bin" / "tool"
    script.write_text(f"#!{old}/bin/python\nimport sys\n")
    (new / "bin" / "activate").write_text(f'VIRTUAL_ENV="{old}"\n')
    (new / "pyvenv.cfg").write_text(f"home = /usr/bin\ncommand = /usr/bin/python -m venv {old}\n")
    envs._relocate(new, old, new)
    assert script.read_text().startswith(f"#!{new}/bin/python\n")
    assert str(old) not in (new / "bin" / "activate").read_text()
    assert str(old) not in (new / "pyvenv.cfg").read_text()


# --- CLI ---------------------------------------------------------------------------------------------------------


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lazytune")
    env_command.add_parser(parser.add_subparsers(dest="command"))
    return env_command.run(parser.parse_args(list(argv)))


def test_cli_parsing() -> None:
    parser = argparse.ArgumentParser(prog="lazytune")
    env_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["env", "install", "collie", "alpacalora", "--cpu", "--force"])
    assert (args.command, args.env_command, args.backends, args.cuda, args.force) == (
        "env", "install", ["collie", "alpacalora"], False, True,
    )  # fmt: skip
    assert parser.parse_args(["env", "install", "--all"]).cuda is None
    assert parser.parse_args(["env", "install", "collie", "--cuda"]).cuda is True
    assert parser.parse_args(["env", "path", "collie", "--python"]).python is True
    with pytest.raises(SystemExit):
        parser.parse_args(["env", "install", "x", "--cpu", "--cuda"])
    with pytest.raises(SystemExit):
        parser.parse_args(["env"])


def test_cli_path_and_list(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("env", "path", "collie") == 0
    assert capsys.readouterr().out.strip() == str(home / "envs" / "collie")
    monkeypatch.setenv("LAZYTUNE_COLLIE_PYTHON", "/x/python")
    assert cli("env", "path", "collie", "--python") == 0
    assert capsys.readouterr().out.strip() == "/x/python"
    assert cli("env", "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(envs.BACKENDS)
    assert rows[-1]["override"] == "/x/python"
    assert cli("env", "list") == 0
    assert "overridden by LAZYTUNE_COLLIE_PYTHON" in capsys.readouterr().out


def test_cli_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("env", "install", "colie") == 1
    assert "Did you mean collie" in capsys.readouterr().err
    assert cli("env", "install") == 1
    assert "--all" in capsys.readouterr().err
    assert not home.exists(), "nothing built for a bad name"


def test_cli_module_entry(home: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lazytune.commands.env", "path", "flagembedding"],
        capture_output=True, text=True, env=dict(os.environ), check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == str(home / "envs" / "flagembedding")


def test_check_reports_failure_with_this_interpreter(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = envs.EnvSpec("tiny", "t", (), imports=("json", "no_such_module_xyz"), report=("pytest", "no-such-dist-xyz"))
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": spec})
    result = envs.check("tiny")
    assert result["python"] == sys.executable
    assert result["ok"] is False
    assert result["imports"]["json"]["ok"] is True
    assert "ModuleNotFoundError" in result["imports"]["no_such_module_xyz"]["error"]
    assert result["versions"] == {"pytest": pytest.__version__, "no-such-dist-xyz": None}


# --- a real install, offline: wheels made here ---------------------------------------------------------------------


def make_wheel(
    folder: Path, dist: str, version: str, files: dict[str, str], scripts: dict[str, str] | None = None
) -> Path:
    """A minimal pure-Python wheel (files: path -> text; scripts: console name -> 'module:function')."""
    tag = f"{dist}-{version}"
    info = f"{tag}.dist-info"
    content = dict(files)
    content[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    content[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: lazytune-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        content[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(
            f"{k} = {v}\n" for k, v in scripts.items()
        )
    record = []
    for name, text in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    content[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"{tag}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in content.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def tiny_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> envs.EnvSpec:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    good = make_wheel(
        wheels, "lt_tiny", "1.0",
        {"lt_tiny/__init__.py": "import torchaudio_like\n\ndef main():\n    print('tiny-ok')\n"},
        {"lt-tiny": "lt_tiny:main"},
    )  # fmt: skip
    bad = make_wheel(wheels, "lt_forbidden", "1.0", {"lt_forbidden.py": "X = 1\n"})
    spec = envs.EnvSpec(
        name="tiny",
        description="test env",
        groups=(envs.PipGroup((str(good), str(bad)), no_deps=True),),
        imports=("lt_tiny",),
        report=("lt_tiny",),
        forbidden=("lt_forbidden",),
        standins=(envs.Standin("torchaudio_like", "imported by lt_tiny", "'''stand-in'''\n"),),
        check_commands=(("{bin}/lt-tiny",),),
    )
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": spec})
    return spec


def test_fresh_install_of_a_small_env(home: Path, tiny_spec: envs.EnvSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    path = envs.install("tiny", cuda=False, log=lines.append)
    assert path == home / "envs" / "tiny"
    assert not (home / "envs" / ".tiny.building").exists()
    stamp = envs.read_stamp("tiny")
    assert stamp["spec_hash"] == envs.spec_hash(tiny_spec, "cpu") and stamp["size_bytes"] > 0
    assert (path / envs.LOG_NAME).is_file()
    assert envs.python_for("tiny") == str(envs.env_python(path))
    # the console script was relocated from the build folder and runs
    script = path / "bin" / "lt-tiny"
    assert ".tiny.building" not in script.read_text()
    assert script.stat().st_mode & stat.S_IXUSR
    result = envs.check("tiny")
    assert result["ok"], result
    assert result["versions"] == {"lt_tiny": "1.0"}
    assert result["commands"][0]["output"].strip() == "tiny-ok"
    assert result["forbidden_present"] == []  # installed by the group, removed after it
    # idempotent: nothing rebuilt
    lines.clear()
    mtime = (path / envs.STAMP_NAME).stat().st_mtime_ns
    assert envs.install("tiny", cuda=False, log=lines.append) == path
    assert "already installed" in lines[0] and (path / envs.STAMP_NAME).stat().st_mtime_ns == mtime
    # a changed spec rebuilds in place of the old one
    changed = envs.EnvSpec(**{**tiny_spec.__dict__, "forbidden": ()})
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": changed})
    assert envs.status("tiny")["state"] == "outdated"
    envs.install("tiny", cuda=False, log=lines.append)
    assert envs.status("tiny")["state"] == "installed"
    assert envs.check("tiny")["forbidden_present"] == []
    proc = subprocess.run([envs.python_for("tiny"), "-c", "import lt_forbidden"], capture_output=True)
    assert proc.returncode == 0
    assert not (home / "envs" / ".tiny.old").exists()
    # remove
    assert envs.remove("tiny") is True and envs.python_for("tiny") == sys.executable
    assert envs.remove("tiny") is False


def test_failed_install_leaves_nothing_that_looks_installed(home: Path, tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "no-such-1.0-py3-none-any.whl"
    spec = envs.EnvSpec("tiny", "t", (envs.PipGroup((str(missing),), no_deps=True),), ("json",), ("pip",))
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": spec})
    with pytest.raises(envs.EnvError, match=r"(?s)command failed.*pip install.*last lines.*no-such-1\.0"):
        envs.install("tiny", cuda=False, log=lambda _: None)
    assert envs.status("tiny")["state"] == "missing"
    assert not (home / "envs" / "tiny").exists() and not (home / "envs" / ".tiny.building").exists()
    assert (home / "envs" / ".tiny.building.log").is_file()


def test_gpu_detection_uses_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho '0, GPU-abc, NVIDIA H100 80GB HBM3, 81559, 0, 81559'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert envs.has_gpu() is True
    fake.write_text("#!/bin/sh\nexit 9\n")
    assert envs.has_gpu() is False
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert envs.has_gpu() is False


@pytest.mark.slow
def test_torch_build_check_with_a_real_torch() -> None:
    """The CPU torch of an installed env passes as "cpu" and is refused as "cuda" (the guard of `--cuda`)."""
    names = [n for n in envs.BACKENDS if envs.read_stamp(n) is not None]
    if not names:
        pytest.skip("no backend environment installed")
    python = str(envs.env_python(envs.env_dir(names[0])))
    version = envs.check_torch_build(python, "cpu")
    assert version.startswith(envs.TORCH_VERSION)
    with pytest.raises(envs.EnvError, match=r"asked for a cuda build of torch but pip installed torch 2\.13\.0"):
        envs.check_torch_build(python, "cuda")


# --- the real environments -----------------------------------------------------------------------------------------


def required(name: str) -> bool:
    """Whether LAZYTUNE_REQUIRE_ENVS ("1": all, else names separated by spaces or commas) makes `name` a must."""
    value = os.environ.get("LAZYTUNE_REQUIRE_ENVS", "").strip()
    return value == "1" or name in value.replace(",", " ").split()


def test_required_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYTUNE_REQUIRE_ENVS", "llamafactory alpacalora,collie")
    assert required("collie") and required("alpacalora") and not required("llamafactory-ppo")
    monkeypatch.setenv("LAZYTUNE_REQUIRE_ENVS", "1")
    assert required("llamafactory-ppo")
    monkeypatch.delenv("LAZYTUNE_REQUIRE_ENVS")
    assert not required("collie")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(envs.BACKENDS))
def test_installed_env_imports(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(envs.python_variable(name), raising=False)
    state = envs.status(name)["state"]
    if state == "missing":
        if required(name):
            pytest.fail(f"environment {name} is not installed (run `lazytune env install {name}`)")
        pytest.skip(f"environment {name} not installed (`lazytune env install {name}`)")
    result = envs.check(name)
    assert result["ok"], json.dumps(result, indent=2)
    assert result["python"] == str(envs.env_python(envs.env_dir(name)))
    spec = envs.get_spec(name)
    pins = {r.split("==")[0]: r.split("==")[1] for g in spec.groups for r in g.requirements if "==" in r}
    for dist, version in result["versions"].items():
        if dist in pins:
            assert version.split("+")[0] == pins[dist], (dist, version)
    assert result["versions"]["torch"].startswith(envs.TORCH_VERSION)


@pytest.mark.slow
def test_fresh_install_of_the_collie_env(home: Path) -> None:
    """`lazytune env install collie` from nothing (a throw-away LAZYTUNE_HOME), then `import collie` in it."""
    lines: list[str] = []
    path = envs.install("collie", cuda=False, log=lines.append)
    try:
        assert envs.status("collie")["state"] == "installed"
        result = envs.check("collie")
        assert result["ok"], json.dumps(result, indent=2)
        assert result["python"] == str(envs.env_python(path))
        assert result["versions"]["collie-lm"] == "1.0.7" and result["versions"]["transformers"] == "4.40.2"
        assert result["versions"]["peft"] == "0.10.0"
        assert result["versions"]["torch"].startswith(envs.TORCH_VERSION)
    finally:
        envs.remove("collie")
