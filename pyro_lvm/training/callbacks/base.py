"""A callback: one side effect of training (a guard, a checkpoint, a log, a validation curve, a model kind's own
preparation), called by the loop at fixed points. A new side effect is a new callback; the loop never changes."""

from __future__ import annotations

from typing import Any


class Callback:
    """Every hook does nothing by default. ``fit`` is the loop's ``Fit`` (exp, strategy, state, run_dir, beta,
    elapsed, stop). Hooks run on every rank; a callback that writes checks ``fit.strategy.is_lead``."""

    def on_fit_start(self, fit: Any) -> None:
        """Before the first step (after a restore)."""

    def before_update(self, fit: Any, value: float) -> None:
        """After the step's backward pass, before the optimiser's update (``value``: the step's loss)."""

    def on_step_end(self, fit: Any) -> None:
        """After the update; may set ``fit.stop`` (the loop then agrees it over the ranks: no collective here)."""

    def on_row(self, fit: Any, row: dict) -> None:
        """A metrics row is made (it joins the history after every callback has seen it; they may add keys)."""

    def on_checkpoint(self, fit: Any) -> None:
        """Every ``train.checkpoint_every`` steps and at the last step, on every rank."""

    def on_fit_end(self, fit: Any) -> None:
        """Always, however the fit ended (an error included)."""
