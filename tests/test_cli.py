"""The `lazytune` CLI run as a subprocess: help, train and plan on the dummy backend, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lazytune.cli import COMMANDS

CLI = [sys.executable, "-m", "lazytune.cli"]


def lazytune(*args: object, cwd: Path | None = None, env: dict | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the CLI as users do (a separate process), capturing its output."""
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_help_lists_every_command() -> None:
    out = lazytune("--help")
    assert out.returncode == 0, out.stderr
    for verb in COMMANDS:
        assert verb in out.stdout
    assert "exit codes" in out.stdout


@pytest.mark.parametrize("verb", COMMANDS)
def test_each_command_has_complete_help(verb: str) -> None:
    out = lazytune(verb, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: lazytune {verb}")
    assert "Python" in out.stdout or verb == "env", "each verb's help names its Python equivalent"


def test_version() -> None:
    out = lazytune("--version")
    assert out.returncode == 0 and out.stdout.startswith("lazytune ")


def test_list_options_prints_the_whitelist() -> None:
    out = lazytune("train", "dummy", "--list-options")
    assert out.returncode == 0, out.stderr
    assert "steps_per_epoch" in out.stdout and "num_train_epochs" in out.stdout


def test_train_dummy_writes_layout_manifest_and_prints_result(tmp_path: Path, tiny_folder_model: Path,
                                                              alpaca_file: Path) -> None:
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", "runs/one", "--data", alpaca_file,
                   "steps_per_epoch=4", "learning_rate=2e-4", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    target = tmp_path / "runs" / "one"
    assert out.stdout.strip() == str(target / "lazyllm_merge")
    manifest = json.loads((target / "lazytune_run.json").read_text())
    assert manifest["state"] == "COMPLETED"
    assert manifest["plan"]["options"]["learning_rate"] == 2e-4  # YAML-ish value coerced by the whitelist
    assert manifest["metrics"]["final_loss"] == 0.5
    assert manifest["launcher_kind"] == "local"
    assert [s["exit_code"] for s in manifest["job"]["steps"]] == [0, 0]
    assert (target / "lazyllm_lora" / "training_loss.png").stat().st_size > 1000
    assert manifest["loss_curve"] == str(target / "lazyllm_lora" / "training_loss.png")
    assert "Traceback" not in out.stderr


def test_plan_prints_files_and_argv_and_runs_nothing(tmp_path: Path, tiny_folder_model: Path,
                                                    alpaca_file: Path) -> None:
    out = lazytune("plan", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "--data", alpaca_file,
                   "sleep=0.5")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "--- file " in out.stdout and "dummy_config.json" in out.stdout
    assert "argv[1] = " in out.stdout and "dummy_train.py" in out.stdout
    assert not (tmp_path / "t").exists()
    out = lazytune("plan", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "--json")
    plan = json.loads(out.stdout)
    assert [s["name"] for s in plan["steps"]] == ["train", "merge"]


def test_config_file_and_overrides(tmp_path: Path, tiny_folder_model: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"base_model: {tiny_folder_model}\ntarget_path: {tmp_path / 't'}\nnum_epochs: 2\n"
                      "learning_rate: 0.5\ncp_files: 'no'\n")  # fmt: skip
    out = lazytune("plan", "dummy", "-c", config, "num_train_epochs=3", "--json")
    assert out.returncode == 0, out.stderr
    options = json.loads(out.stdout)["options"]
    assert options["num_train_epochs"] == 3  # the command line wins over the config, alias or not
    assert options["learning_rate"] == 0.5
    assert options["cp_files"] == "no"
    out = lazytune("plan", "dummy", "-c", config, "cp_files=no", "--json")
    assert json.loads(out.stdout)["options"]["cp_files"] == "no"  # a str option keeps `no` verbatim


def test_unknown_option_is_exit_2_with_did_you_mean(tmp_path: Path, tiny_folder_model: Path) -> None:
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "learning_rat=1")
    assert out.returncode == 2
    assert "learning_rate" in out.stderr and "did you mean" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "t").exists()


def test_missing_data_is_exit_2_naming_the_file(tmp_path: Path, tiny_folder_model: Path) -> None:
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "--data",
                   tmp_path / "missing.json")  # fmt: skip
    assert out.returncode == 2
    assert "missing.json" in out.stderr and "no such file" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_yaml_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("learning_rate: 1\nsteps: [1, 2\n")
    out = lazytune("plan", "dummy", "-c", config)
    assert out.returncode == 2
    assert f"{config}, line" in out.stderr and "Traceback" not in out.stderr


def test_missing_base_or_target_is_exit_2(tmp_path: Path) -> None:
    out = lazytune("plan", "dummy", "--target", tmp_path / "t")
    assert out.returncode == 2 and "--base" in out.stderr


def test_not_key_value_is_exit_2(tmp_path: Path, tiny_folder_model: Path) -> None:
    out = lazytune("plan", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "oops")
    assert out.returncode == 2 and "key=value" in out.stderr


def test_failed_job_is_exit_1_with_log_tail(tmp_path: Path, tiny_folder_model: Path) -> None:
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "fail=train")
    assert out.returncode == 1
    assert "failing on purpose" in out.stderr  # the end of the failed step's log
    assert "exit code 3" in out.stderr and "Traceback" not in out.stderr
    manifest = json.loads((tmp_path / "t" / "lazytune_run.json").read_text())
    assert manifest["state"] == "FAILED"


def test_existing_target_needs_overwrite(tmp_path: Path, tiny_folder_model: Path) -> None:
    args = ["train", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "-q"]
    assert lazytune(*args).returncode == 0
    again = lazytune(*args)
    assert again.returncode == 2 and "overwrite" in again.stderr
    assert lazytune(*args, "--overwrite").returncode == 0


def test_every_argument_of_every_command_has_help() -> None:
    import argparse

    from lazytune.cli import build_parser

    def walk(parser: argparse.ArgumentParser, name: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for verb, sub in action.choices.items():
                    missing += walk(sub, f"{name} {verb}")
            elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                missing.append(f"{name}: {action.option_strings or action.dest}")
        return missing

    assert walk(build_parser(), "lazytune") == []


def test_malformed_data_is_exit_2_with_file_and_line(tmp_path: Path, tiny_folder_model: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": broken\n')
    out = lazytune("plan", "alpacalora", "--base", tiny_folder_model, "--target", tmp_path / "t", "--data", bad)
    assert out.returncode == 2
    assert f"{bad}, line 2: invalid JSON" in out.stderr and "Traceback" not in out.stderr


def test_config_may_hold_the_data(tmp_path: Path, tiny_folder_model: Path, alpaca_file: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data: [{alpaca_file}]\nsteps_per_epoch: 2\n")
    out = lazytune("plan", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "-c", config, "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["data"] == [str(alpaca_file)] and plan["options"]["steps_per_epoch"] == 2
