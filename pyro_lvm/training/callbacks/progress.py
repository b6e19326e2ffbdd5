"""Progress (a bar on a terminal, lines in a log) and the validation curve: what a person watching the run sees,
and the one figure a row gains on the lead rank."""

from __future__ import annotations

from collections.abc import Callable

from pyro_lvm import progress
from pyro_lvm.training.callbacks.base import Callback


class Progress(Callback):
    """One bar for a job of several ranks (the lead's); the row's train ELBO, and the validation ELBO where the
    run has one."""

    def on_fit_start(self, fit) -> None:
        cfg = fit.exp.cfg.train
        self.bar = progress.bar(
            cfg.steps, fit.state.step, "train", "step", enabled=cfg.progress and fit.strategy.is_lead
        )

    def on_step_end(self, fit) -> None:
        self.bar.update(1)

    def on_row(self, fit, row: dict) -> None:
        shown = {"elbo": f"{row['train_elbo']:.2f}"}
        if "val_elbo" in row:
            shown["val"] = f"{row['val_elbo']:.2f}"
        self.bar.set_postfix(**shown)

    def on_fit_end(self, fit) -> None:
        if getattr(self, "bar", None) is not None:
            self.bar.close()


class Validation(Callback):
    """``val_elbo = estimate(exp)`` on each row, on the lead rank (the estimator draws from its own seeded stream,
    so training draws are untouched); the recipe of the model kind chooses the estimator."""

    def __init__(self, estimate: Callable) -> None:
        self.estimate = estimate

    def on_row(self, fit, row: dict) -> None:
        if fit.strategy.is_lead:
            row["val_elbo"] = self.estimate(fit.exp)


class TimeBudget(Callback):
    """``train.max_seconds``: the run stops after the step that reaches it (on every rank at the same step), and
    saves as at its last step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, fit) -> None:
        fit.stop = fit.stop or fit.elapsed >= self.seconds  # agreed over the ranks by the loop
