"""The quadrant CVAE's preparation: its deterministic NN completion baseline (``pyro_lvm.models.baseline``) is
fitted before the CVAE trains, on its own random stream, and checkpointed with it."""

from __future__ import annotations

from pyro_lvm.models.baseline import fit_baseline
from pyro_lvm.training.callbacks.base import Callback


class FitBaseline(Callback):
    def on_fit_start(self, fit) -> None:
        exp = fit.exp
        if fit.state.resumed:  # a resumed run restored the fitted baseline with the model
            return
        b, cfg = exp.cfg.baseline, exp.cfg.train
        fit.state.summary |= fit_baseline(
            exp.model.baseline,
            exp.data.training_rows,
            exp.data.val,
            exp.condition,
            b.steps,
            b.batch_size,
            b.lr,
            cfg.seed,
            exp.data.dynamic,
            cfg.progress,
        )
