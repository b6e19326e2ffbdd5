"""Checkpoints of a run folder: the resolved config when the fit starts, then every ``train.checkpoint_every`` steps
and at the end the run state (gathered from every rank by the strategy) and the metrics files, written by the lead
rank. A state holding a NaN or infinity is never saved over the last good one."""

from __future__ import annotations

from pathlib import Path

from pyro_lvm import config
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT, CONFIG, write_metrics
from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.callbacks.guard import stop_nonfinite


class Checkpoint(Callback):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_fit_start(self, fit) -> None:
        if fit.strategy.is_lead and fit.exp.configured:  # the resolved config (resume overrides included)
            config.save(fit.exp.cfg, self.run_dir / CONFIG)

    def on_checkpoint(self, fit) -> None:
        exp, state = fit.exp, fit.state
        # compiled or plain, and why (set every time: a resume may have changed elbo.jit)
        path = getattr(fit.strategy, "path", None) or getattr(exp.elbo, "path", f"{exp.cfg.elbo.name}, plain")
        state.summary["elbo_path"] = path
        whole = fit.strategy.consolidate(state.state_dict(exp))  # lead: every rank's rows; others: None
        bad = whole and checkpoint.first_nonfinite(checkpoint.tensors(whole))
        if bad:  # never save a poisoned state over the last good one
            stop_nonfinite(state.step, "state", bad, fit)
        if whole is not None:
            checkpoint.save(whole, self.run_dir / CHECKPOINT)
            write_metrics(self.run_dir, state.history, state.summary)
        state.saved_step = state.step
