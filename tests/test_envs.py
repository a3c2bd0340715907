"""Per-backend environments (lazytune/envs.py, `lazytune env ...`).

Unit tests use a throw-away LAZYTUNE_HOME. `test_fresh_install_*` builds a real venv from a lock of wheels made here
(with uv and with pip). The `slow` tests import each backend in its real managed environment under the default home;
they skip an environment that is not installed unless LAZYTUNE_REQUIRE_ENVS names it ("1": all; CI installs envs first).
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
    assert set(envs.BACKENDS) == {
        "llamafactory", "llamafactory-ppo", "alpacalora", "flagembedding", "collie", "lazyllm",
    }  # fmt: skip
    for name, spec in envs.BACKENDS.items():
        assert spec.name == name
        assert spec.imports and spec.report
        if name != "lazyllm":  # the LazyLLM client trains nothing itself
            assert spec.requirements[0] == envs.TORCH, "torch first"
            assert spec.smoke in ("causal-lora", "flagembedding")
    assert {"transformers==4.40.2", "peft==0.10.0", "collie-lm==1.0.7"} <= set(envs.BACKENDS["collie"].requirements)
    lf = envs.BACKENDS["llamafactory"]
    assert lf.unresolved == ("llamafactory==0.9.5",)
    assert "torchvision" in lf.forbidden and [s.module for s in lf.standins] == ["torchaudio"]
    assert "trl==0.9.6" in envs.BACKENDS["llamafactory-ppo"].requirements
    fe = envs.BACKENDS["flagembedding"].requirements
    assert "flagembedding==1.4.2" in fe and not any("[finetune]" in r for r in fe)
    assert envs.torch_requirement(False) == "torch==2.13.0+cpu"
    assert envs.torch_requirement(True) == "torch==2.13.0"


@pytest.mark.parametrize("name", list(envs.BACKENDS))
@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_every_env_has_a_complete_lock(name: str, variant: str) -> None:
    """Each lock pins every package (transitive ones too) to one version, says how it was made, and agrees with the
    spec's own pins; the CUDA lock carries bitsandbytes and deepspeed."""
    spec = envs.get_spec(name)
    lock = envs.read_lock(name, variant)
    assert lock.text.startswith(f"# lazytune lock: {name} ({variant})")
    assert "Why the odd pins:" in lock.text and "Made by `lazytune env lock" in lock.text
    if envs.TORCH not in spec.requirements:
        assert "torch" not in lock.pins
        return
    assert lock.pins["torch"] == ("2.13.0" if variant == "cuda" else "2.13.0+cpu")
    for requirement in (*spec.requirements, *spec.unresolved):
        if "==" in requirement:
            dist, version = requirement.split("==")
            assert lock.pins[envs.normalize(dist)] == version, requirement
    assert {"numpy", "filelock", "safetensors"} <= set(lock.pins), "transitive packages are locked too"
    if variant == "cuda":
        assert {"bitsandbytes", "deepspeed"} <= set(lock.pins)
        assert any(n.startswith("nvidia-") for n in lock.pins)
    else:
        assert not any(n.startswith("nvidia-") for n in lock.pins), "the CPU lock has no CUDA runtime"
    assert not set(spec.forbidden) & set(lock.pins)


def test_parse_lock_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "x-cpu.txt"
    bad.write_text("# header\nsix==1.16.0\nrequests>=2\n")
    with pytest.raises(envs.EnvError, match=r"x-cpu.txt:3: not a `name==version` line: 'requests>=2'"):
        envs.parse_lock(bad)
    bad.write_text("# nothing\n")
    with pytest.raises(envs.EnvError, match="pins no package"):
        envs.parse_lock(bad)
    with pytest.raises(envs.EnvError, match=r"no lock file .*missing.txt.*lazytune env lock"):
        envs.parse_lock(tmp_path / "missing.txt")
    good = tmp_path / "y-cpu.txt"
    good.write_text("Six==1.16.0\nzope_interface==7.0\n# --with extra: why\n#+ extra-dep==2.0\n")
    lock = envs.parse_lock(good)
    assert lock.pins == {"six": "1.16.0", "zope-interface": "7.0"}
    assert lock.optional == {"extra": {"extra-dep": "2.0"}}
    assert lock.lines(["extra"]) == ["six==1.16.0", "zope-interface==7.0", "extra-dep==2.0"]


def test_compare_with_lock() -> None:
    lock = envs.Lock(Path("l.txt"), {"torch": "2.13.0+cpu", "six": "1.16.0"}, {"deepspeed": {"hjson": "3.1.0"}}, "")
    same = envs.compare_with_lock({"torch": "2.13.0+cpu", "Six": "1.16.0", "pip": "24.0"}, lock)
    assert same == {"changed": [], "missing": [], "extra": []}
    drift = envs.compare_with_lock({"torch": "2.13.0", "requests": "2.0", "hjson": "3.1.0"}, lock)
    assert drift["changed"] == [{"name": "torch", "locked": "2.13.0+cpu", "installed": "2.13.0"}]
    assert drift["missing"] == ["six"] and drift["extra"] == ["hjson", "requests"]
    assert envs.compare_with_lock({"torch": "2.13.0+cpu", "six": "1.16.0", "hjson": "3.1.0"}, lock, ["deepspeed"]) == {
        "changed": [], "missing": [], "extra": [],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("driver", "cuda", "index"),
    [
        ("580.65.06", "13.0", None),
        ("590.10", "13.0", None),
        ("575.51.03", "12.6", envs.CUDA12_INDEX),
        ("525.60.13", "12.6", envs.CUDA12_INDEX),
        (None, "13.0", None),
    ],
)
def test_torch_build_for_driver(driver: str | None, cuda: str, index: str | None) -> None:
    build = envs.torch_build_for_driver(driver)
    assert (build.cuda, build.index) == (cuda, index)
    assert build.requirement == ("torch==2.13.0" if cuda == "13.0" else "torch==2.13.0+cu126")


def test_torch_build_for_an_old_driver_says_what_to_do() -> None:
    with pytest.raises(envs.EnvError, match=r"driver 470.82.01 is too old.*>= 525.60.13.*--cpu"):
        envs.torch_build_for_driver("470.82.01")
    assert envs.torch_build_for_driver("550.54.15", "https://mirror/cu126").index == "https://mirror/cu126"


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


def test_spec_hash(tmp_path: Path) -> None:
    spec = envs.BACKENDS["collie"]
    digest = envs.spec_hash(spec, "cpu")
    assert digest == envs.spec_hash(spec, "cpu")
    assert digest != envs.spec_hash(spec, "cuda")
    assert digest != envs.spec_hash(spec, "cpu", ["deepspeed"])
    assert len({envs.spec_hash(s, "cpu") for s in envs.BACKENDS.values()}) == len(envs.BACKENDS)
    # the lock decides the content: a changed lock means a rebuild
    (tmp_path / "collie-cpu.txt").write_text(envs.read_lock("collie", "cpu").text + "six==1.16.0\n")
    assert envs.spec_hash(envs.EnvSpec(**{**spec.__dict__, "locks": tmp_path}), "cpu") != digest
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
        "lazyllm": "missing",
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
    spec = envs.EnvSpec(
        "tiny", "t", (), imports=("json", "no_such_module_xyz"), report=("pytest", "no-such-dist-xyz"), smoke="none"
    )
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
    """A spec whose lock names two wheels made here, found through pip's find-links (as uv is told too)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(
        wheels, "lt_tiny", "1.0",
        {"lt_tiny/__init__.py": "import torchaudio_like\n\ndef main():\n    print('tiny-ok')\n"},
        {"lt-tiny": "lt_tiny:main"},
    )  # fmt: skip
    make_wheel(wheels, "lt_tiny", "2.0", {"lt_tiny/__init__.py": "import torchaudio_like\n"})
    make_wheel(wheels, "lt_dep", "1.0", {"lt_dep.py": "X = 1\n"})
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "tiny-cpu.txt").write_text("# lazytune lock: tiny (cpu)\nlt-dep==1.0\nlt-tiny==1.0\n")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    spec = envs.EnvSpec(
        name="tiny",
        description="test env",
        requirements=("lt-tiny",),
        imports=("lt_tiny", "lt_dep"),
        report=("lt_tiny",),
        smoke="none",
        forbidden=("lt_forbidden",),
        standins=(envs.Standin("torchaudio_like", "imported by lt_tiny", "\'\'\'stand-in\'\'\'\n"),),
        check_commands=(("{bin}/lt-tiny",),),
        locks=locks,
    )
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": spec})
    return spec


@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_fresh_install_of_a_small_env(
    home: Path, tiny_spec: envs.EnvSpec, tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZYTUNE_INSTALLER", tool)
    lines: list[str] = []
    path = envs.install("tiny", cuda=False, log=lines.append)
    assert path == home / "envs" / "tiny"
    assert any(f"with {tool}" in line for line in lines) and any("smoke run passed" in line for line in lines)
    assert not (home / "envs" / ".tiny.building").exists()
    stamp = envs.read_stamp("tiny")
    assert stamp["spec_hash"] == envs.spec_hash(tiny_spec, "cpu") and stamp["size_bytes"] > 0
    assert stamp["installer"] == tool and stamp["lock"].endswith("tiny-cpu.txt")
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
    assert result["drift"] == {"changed": [], "missing": [], "extra": []}, "installed exactly the lock"
    assert "equal to the lock" in envs.format_check(result)
    # idempotent: nothing rebuilt
    lines.clear()
    mtime = (path / envs.STAMP_NAME).stat().st_mtime_ns
    assert envs.install("tiny", cuda=False, log=lines.append) == path
    assert "already installed" in lines[0] and (path / envs.STAMP_NAME).stat().st_mtime_ns == mtime
    # drift: a package changed by hand is reported and makes the check fail
    subprocess.run(
        [envs.find_uv(), "pip", "install", "-q", "--no-deps", "--python", str(envs.env_python(path)),
         "--find-links", os.environ["PIP_FIND_LINKS"], "lt_tiny==2.0"], check=True, capture_output=True,
    )  # fmt: skip
    result = envs.check("tiny")
    assert not result["ok"]
    assert result["drift"]["changed"] == [{"name": "lt-tiny", "locked": "1.0", "installed": "2.0"}]
    assert "differs from the lock: lt-tiny 2.0 (lock: 1.0)" in envs.format_check(result)
    # a changed lock rebuilds in place of the old one
    (tiny_spec.locks / "tiny-cpu.txt").write_text("lt-dep==1.0\nlt-tiny==1.0\n# changed\n")
    assert envs.status("tiny")["state"] == "outdated"
    envs.install("tiny", cuda=False, log=lines.append)
    assert envs.status("tiny")["state"] == "installed" and envs.check("tiny")["ok"]
    assert not (home / "envs" / ".tiny.old").exists()
    # remove
    assert envs.remove("tiny") is True and envs.python_for("tiny") == sys.executable
    assert envs.remove("tiny") is False


def test_lock_that_does_not_install_leaves_nothing(home: Path, tiny_spec: envs.EnvSpec) -> None:
    (tiny_spec.locks / "tiny-cpu.txt").write_text("lt-dep==1.0\nlt-tiny==9.9\n")
    message = r"(?s)command failed.*names a version the package index.*env lock tiny.*lt-tiny"
    with pytest.raises(envs.EnvError, match=message):
        envs.install("tiny", cuda=False, log=lambda _: None)
    assert envs.status("tiny")["state"] == "missing"
    assert not (home / "envs" / "tiny").exists() and not (home / "envs" / ".tiny.building").exists()
    assert (home / "envs" / ".tiny.building.log").is_file()


def test_env_that_fails_its_checks_is_not_installed(home: Path, tiny_spec: envs.EnvSpec, monkeypatch) -> None:
    broken = envs.EnvSpec(**{**tiny_spec.__dict__, "imports": ("lt_tiny", "no_such_module_xyz")})
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": broken})
    with pytest.raises(envs.EnvError, match=r"(?s)the new environment does not work.*no_such_module_xyz"):
        envs.install("tiny", cuda=False, log=lambda _: None)
    assert envs.status("tiny")["state"] == "missing" and not (home / "envs" / "tiny").exists()
    failing_smoke = envs.EnvSpec(**{**tiny_spec.__dict__, "smoke": "torch"})  # no torch in this env
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": failing_smoke})
    with pytest.raises(envs.EnvError, match=r"(?s)the smoke run failed.*torch"):
        envs.install("tiny", cuda=False, log=lambda _: None)
    assert envs.status("tiny")["state"] == "missing" and not (home / "envs" / ".tiny.building").exists()


def test_half_built_env_is_not_installed_and_is_rebuilt(home: Path, tiny_spec: envs.EnvSpec) -> None:
    fake_installed("tiny", stamp=False)  # a folder without a stamp: an interrupted install
    assert envs.status("tiny")["state"] == "missing"
    (home / "envs" / ".tiny.building").mkdir()
    envs.install("tiny", cuda=False, log=lambda _: None)
    assert envs.status("tiny")["state"] == "installed" and envs.check("tiny")["ok"]


def test_unknown_optional_group(home: Path, tiny_spec: envs.EnvSpec) -> None:
    with pytest.raises(envs.EnvError, match=r"no optional group 'deepspeeed'. Did you mean deepspeed"):
        envs.install("llamafactory", cuda=False, with_=["deepspeeed"], log=lambda _: None)
    with pytest.raises(envs.EnvError, match=r"flash-attn has no wheel to lock.*--no-build-isolation"):
        envs.install("llamafactory", cuda=False, with_=["flash-attn"], log=lambda _: None)
    assert not home.exists()


def test_lock_makes_a_checked_lock(home: Path, tiny_spec: envs.EnvSpec, tmp_path: Path, monkeypatch) -> None:
    """`env lock` resolves the top-level requirements afresh, installs, checks and smoke-runs, then writes."""
    spec = envs.EnvSpec(**{**tiny_spec.__dict__, "imports": ("lt_tiny",), "check_commands": ()})
    monkeypatch.setattr(envs, "BACKENDS", {**envs.BACKENDS, "tiny": spec})
    out = tmp_path / "new-lock.txt"
    lines: list[str] = []
    envs.lock("tiny", output=out, log=lines.append)
    lock = envs.parse_lock(out)
    assert lock.pins == {"lt-tiny": "2.0"}, "the newest lt-tiny: a fresh resolution"
    assert "Verified: installed, imports and smoke run (none) passed" in lock.text
    assert "#   lt-tiny" in lock.text and any("smoke run passed" in line for line in lines)


def test_missing_packages_name_the_install_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYTUNE_LLAMAFACTORY_PYTHON", sys.executable)
    problems = envs.missing_packages(
        "llamafactory", {"pytest": "testing", "deepspeed": "deepspeed='ds.json' (ZeRO)", "flash-attn": "fa2"}
    )
    assert len(problems) == 2
    assert "deepspeed='ds.json' (ZeRO) needs the package deepspeed" in problems[0]
    assert f"{sys.executable} -m pip install deepspeed" in problems[0]
    assert "flash-attn --no-build-isolation" in problems[1]
    monkeypatch.delenv("LAZYTUNE_LLAMAFACTORY_PYTHON")
    fake_installed("llamafactory")
    assert "`lazytune env install llamafactory --with deepspeed`" in envs.missing_packages(
        "llamafactory", {"deepspeed": "ZeRO"}
    )[0]


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
    assert result["drift"] is not None, "a managed environment is compared with its lock"
    assert not result["drift"]["changed"] and not result["drift"]["missing"], result["drift"]
    if envs.TORCH in envs.get_spec(name).requirements:
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
        assert result["drift"] == {"changed": [], "missing": [], "extra": []}, "equal to its lock"
    finally:
        envs.remove("collie")
