"""Progress from a backend's own log: the bar advances while a real run writes its trainer_log.jsonl."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

import launchers
from lazytune import finetune
from lazytune.progress import LogFollower, Progress, plot_loss, resolve_mode, summarize, watch
from lazytune.run import loss_curve
from tests.test_cli import lazytune


def test_bar_advances_while_a_real_run_writes_its_log(tmp_path: Path, tiny_folder_model: Path) -> None:
    trainer = finetune.dummy(tiny_folder_model, tmp_path / "t", launcher=launchers.local(ngpus=0, stream=False),
                             steps_per_epoch=10, sleep=0.15)  # fmt: skip
    run = trainer.start()
    progress = Progress(trainer.progress_log(run.plan), "bar", io.StringIO())
    seen = []
    while not run.job.state.finished:
        progress.update()
        if progress._bar is not None and (not seen or seen[-1] != progress._bar.n):
            seen.append(progress._bar.n)
        time.sleep(0.05)
    progress.update()
    seen.append(progress._bar.n)
    assert run.wait() == str(tmp_path / "t" / "lazyllm_merge")
    assert seen == sorted(seen) and seen[-1] == 10 and progress._bar.total == 10
    assert len(set(seen)) >= 4, f"the bar should move step by step while the run goes, saw {seen}"
    assert progress.loss == 0.2
    progress.close()


def test_cli_progress_bar_from_the_log(tmp_path: Path, tiny_folder_model: Path) -> None:
    out = lazytune("train", "dummy", "--base", tiny_folder_model, "--target", tmp_path / "t", "steps_per_epoch=6",
                   "sleep=0.5", "--progress", "bar")  # fmt: skip
    assert out.returncode == 0, out.stderr
    frames = re.findall(r"(\d+)/6 \[", out.stderr)  # tqdm redraws: "dummy:  50%|█████     | 3/6 [00:01<..."
    steps = [int(f) for f in frames]
    assert steps[-1] == 6 and steps == sorted(steps) and len(set(steps)) >= 3, out.stderr
    assert "loss=0.3333" in out.stderr  # the loss of step 6 (2.0 / step)


def test_cli_lines_and_quiet(tmp_path: Path, tiny_folder_model: Path) -> None:
    base = ["train", "dummy", "--base", tiny_folder_model, "steps_per_epoch=10", "sleep=0.2"]
    lines = lazytune(*base, "--target", tmp_path / "a", "--progress", "lines")
    assert "dummy step 10/10 (100%) loss=0.2" in lines.stderr
    assert lines.stderr.count("lazytune: dummy step") >= 2
    quiet = lazytune(*base, "--target", tmp_path / "b", "--progress", "bar", "-q")
    assert quiet.stderr == "" and quiet.stdout.strip() == str(tmp_path / "b" / "lazyllm_merge")
    env_quiet = lazytune(*base, "--target", tmp_path / "c", env={"LAZYTUNE_QUIET": "1"})
    assert "step 10/10" not in env_quiet.stderr and "%|" not in env_quiet.stderr


def test_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYTUNE_QUIET", "1")
    assert resolve_mode(None) == "none" and resolve_mode("bar") == "bar"
    monkeypatch.setenv("LAZYTUNE_QUIET", "0")
    assert resolve_mode("auto", io.StringIO()) == "lines"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_mode(None, Tty()) == "bar"
    with pytest.raises(ValueError, match="progress must be one of"):
        resolve_mode("fancy")


def test_follower_reads_only_complete_lines_and_survives_a_restart(tmp_path: Path) -> None:
    log = tmp_path / "trainer_log.jsonl"
    follower = LogFollower(log)
    assert follower.new_entries() == []  # not there yet
    log.write_text('{"current_steps": 1, "total_steps": 4, "loss": 2.0}\n{"current_steps": 2, "tot')
    assert [e["current_steps"] for e in follower.new_entries()] == [1]
    with open(log, "a") as f:
        f.write('al_steps": 4, "loss": 1.0}\n')
    assert [e["current_steps"] for e in follower.new_entries()] == [2]
    log.write_text('{"current_steps": 1, "total_steps": 8}\n')  # the trainer started over
    assert follower.new_entries() == [{"current_steps": 1, "total_steps": 8}]


def test_hf_trainer_log_history_format(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in [
        {"step": 5, "max_steps": 20, "loss": 1.5}, {"step": 10, "max_steps": 20, "loss": 1.2, "epoch": 0.5},
        {"step": 10, "max_steps": 20, "eval_loss": 1.3},
    ]) + "\n")  # fmt: skip
    assert summarize([json.loads(x) for x in log.read_text().splitlines()]) == {
        "step": 10, "total_steps": 20, "first_loss": 1.5, "final_loss": 1.2,
    }  # fmt: skip
    out = io.StringIO()
    with watch(log, "lines", out, desc="ours", interval=0.01):
        pass
    assert re.fullmatch(r"lazytune: ours step 10/20 \(50%\) loss=1.2 eta 0:00:\d\d", out.getvalue().splitlines()[-1])


def test_loss_curve_png_and_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "trainer_log.jsonl"
    log.write_text("".join(json.dumps({"current_steps": s, "total_steps": 30, "loss": 3 / s}) + "\n"
                           for s in range(1, 31)))  # fmt: skip
    png = plot_loss(log, tmp_path / "loss.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss(tmp_path / "missing.jsonl", tmp_path / "none.png") is None
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    metrics: dict = {}
    (tmp_path / "training_loss.png").unlink(missing_ok=True)
    assert loss_curve(log, metrics) is None
    assert "matplotlib is not installed" in metrics["loss_curve_note"]
