"""Secrets: the values of variables named like credentials (TOKEN, KEY, SECRET, PASSWORD) never reach a log, a
generated script, a plan or a manifest. Real processes print them on purpose; every file written is then searched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import launchers
from launchers import Step
from launchers.secrets import SECRET_NAME
from lazytune import JobFailed
from lazytune.backends.dummy import DummyFinetune
from lazytune.plan import Plan

SECRETS = {
    "HF_TOKEN": "hf_TestSecretValue0001",
    "HUGGING_FACE_HUB_TOKEN": "hf_TestSecretValue0002",
    "WANDB_API_KEY": "wandb-test-secret-0003",
    "AWS_SECRET_ACCESS_KEY": "aws/Test+Secret=0004",
    "PGPASSWORD": "pg pass with spaces 0005",
    "MY_APIKEY": "apikey-test-secret-0006",
    "db_password": "lower-case-name-0007",
}
LAUNCHER_SECRET = ("OPENAI_API_KEY", "sk-test-secret-launcher-0008")
STEP_SECRET = ("GITHUB_TOKEN", "ghp_test_secret_step_0009")
ALL_VALUES = [*SECRETS.values(), LAUNCHER_SECRET[1], STEP_SECRET[1]]

DUMP_ENV = "import os, sys; [print(k, '=', v) for k, v in sorted(os.environ.items())]; print('argv:', sys.argv)"


MORE_SECRET_NAMES = [
    "TOKEN",
    "SECRET_KEY",
    "AWS_SESSION_TOKEN",
    "CI_JOB_TOKEN",
    "DOCKER_PASSWORD",
    "GOOGLE_CREDENTIALS",
]


@pytest.mark.parametrize("name", [*SECRETS, LAUNCHER_SECRET[0], STEP_SECRET[0], *MORE_SECRET_NAMES])
def test_secret_names(name: str) -> None:
    assert SECRET_NAME.search(name), f"{name} should count as a secret"


@pytest.mark.parametrize("name", ["TOKENIZERS_PARALLELISM", "PATH", "HF_HOME", "KEYBOARD_LAYOUT", "PASSWORDLESS_MODE",
                                  "SECRETARY", "TOKENIZER_PATH"])  # fmt: skip
def test_not_secret_names(name: str) -> None:
    assert not SECRET_NAME.search(name), f"{name} should not count as a secret (its value would be masked everywhere)"


class LeakyDummy(DummyFinetune):
    """The dummy, plus a first step that prints its whole environment and argv (as a verbose backend might)."""

    fail_after_dump = False

    def build(self, plan: Plan) -> None:
        super().build(plan)
        code = DUMP_ENV + ("; sys.exit(5)" if self.fail_after_dump else "")
        dump = Step("dump", [self.python(), "-c", code, "--hub-token-from-env"], log=plan.run_dir / "logs" / "dump.log",
                    env=dict([STEP_SECRET, ("PLAIN_SETTING", "visible-value")]))  # fmt: skip
        plan.steps.insert(0, dump)


class FailingLeakyDummy(LeakyDummy):
    fail_after_dump = True


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)


def leaks(root: Path) -> list[str]:
    """`path: value` for every secret value found in any file under `root`."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            found += [f"{path}: {v}" for v in ALL_VALUES if v in text]
    return found


def test_no_secret_in_logs_plan_or_manifest(secret_env: None, tiny_folder_model: Path, alpaca_file: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    target = tmp_path / "target"
    launcher = launchers.local(stream=False, env=dict([LAUNCHER_SECRET]))
    trainer = LeakyDummy(tiny_folder_model, target, launcher=launcher)
    plan = trainer.plan(alpaca_file)
    shown = str(plan) + json.dumps(plan.to_dict())
    assert not [v for v in ALL_VALUES if v in shown]
    assert "visible-value" in shown, "non-secret variables are shown as they are"
    run = trainer.start(plan=plan)
    assert run.wait(timeout=120) == str(target / "lazyllm_merge")
    dump = (plan.run_dir / "logs" / "dump.log").read_text()
    assert "HF_TOKEN = ***" in dump and "GITHUB_TOKEN = ***" in dump and "OPENAI_API_KEY = ***" in dump
    assert "PLAIN_SETTING = visible-value" in dump, "the step really printed its environment"
    assert not leaks(target), leaks(target)
    assert not [v for v in ALL_VALUES if v in run.logs() + json.dumps(run.manifest())]


def test_no_secret_in_a_failure_message(secret_env: None, tiny_folder_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    trainer = FailingLeakyDummy(tiny_folder_model, target, launcher=launchers.local(stream=False,
                                env=dict([LAUNCHER_SECRET])))  # fmt: skip
    with pytest.raises(JobFailed, match=r"step 'dump' FAILED with exit code 5") as info:
        trainer()
    assert "db_password = ***" in str(info.value)
    assert not [v for v in ALL_VALUES if v in str(info.value)]
    assert not leaks(target), leaks(target)


def test_no_secret_on_the_console(secret_env: None, tiny_folder_model: Path, tmp_path: Path,
                                  capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Streamed output (what a user sees in the terminal or a CI log) is masked too."""
    LeakyDummy(tiny_folder_model, tmp_path / "target", launcher=launchers.local(stream=True))()
    out, err = capfd.readouterr()
    assert "HF_TOKEN = ***" in out
    assert not [v for v in ALL_VALUES if v in out + err]


def test_no_secret_in_a_slurm_batch_script(secret_env: None, tiny_folder_model: Path, tmp_path: Path) -> None:
    """The generated sbatch script (written to disk, readable by the cluster's admins) never holds a secret value."""
    from launchers.slurm import SlurmLauncher

    launcher = SlurmLauncher(env=dict([LAUNCHER_SECRET, ("PLAIN_SETTING", "visible-value")]),
                             env_allow=["HF_TOKEN"])  # fmt: skip
    trainer = LeakyDummy(tiny_folder_model, tmp_path / "target", launcher=launcher)
    plan = trainer.plan()
    script, argv, submit_env = launcher.prepare(plan.steps, "secrets", tmp_path / "job")
    assert "visible-value" in script
    assert not [v for v in ALL_VALUES if v in script + " ".join(argv)]
    assert submit_env["HF_TOKEN"] == SECRETS["HF_TOKEN"], "secrets reach the job through sbatch's environment"
    assert submit_env[LAUNCHER_SECRET[0]] == LAUNCHER_SECRET[1]
