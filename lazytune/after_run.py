"""What happens once a run's job has ended: final loss from the backend's log, the loss curve PNG, the upload of
the merged model when the target is a URL. Called by `Run` before it writes the final manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchers import JobState

from .progress import plot_loss, read_trainer_log, summarize

if TYPE_CHECKING:
    from .run import Run


def after_run(run: Run) -> None:
    """Fill `run.metrics` / `run.loss_curve` from the progress log; upload the merge for URL targets.

    Never raises: a missing plot is a note in the metrics; a failed upload is a problem (the run then FAILED).
    """
    log = run.trainer.progress_log(run.plan)
    if log is not None and log.is_file():
        summary = summarize(read_trainer_log(log))
        for key, value in summary.items():
            if run.metrics.get(key) is None and value is not None:
                run.metrics[key] = value
        run.loss_curve = loss_curve(log, run.metrics, run.started)
    tensorboard = run.plan.target.lora / "runs"
    if tensorboard.is_dir():
        run.metrics["tensorboard"] = str(tensorboard)
    url = getattr(run.plan.target, "url", None)
    if url and run.job.state is JobState.COMPLETED and not run.problems:
        from .fetch import upload

        try:
            run.metrics["uploaded"] = upload(run.plan.target.merge, f"{url.rstrip('/')}/{run.plan.target.merge.name}")
        except Exception as exc:  # the outputs stay local; the run says it failed and why
            run.problems.append(f"upload of {run.plan.target.merge} to {url} failed: {type(exc).__name__}: {exc}")


def loss_curve(log: Path, metrics: dict[str, Any], since: float = 0.0) -> Path | None:
    """The backend's own training_loss.png beside the log (LLaMA-Factory), else one drawn with matplotlib."""
    png = log.parent / "training_loss.png"
    if png.is_file() and png.stat().st_mtime >= since:
        return png
    try:
        return plot_loss(log, png)
    except ImportError:
        metrics["loss_curve_note"] = "matplotlib is not installed: no loss curve PNG (pip install matplotlib)"
    except Exception as exc:  # a plot is informative; never fail a run for it
        metrics["loss_curve_note"] = f"loss curve not drawn: {type(exc).__name__}: {exc}"
    return None
