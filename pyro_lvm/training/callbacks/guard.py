"""The non-finite guard: a NaN or infinite loss or gradient (checked every step, before the update) stops the run,
naming the step and the tensor; the last checkpoint stays as it was. A deferred step kind (a CUDA graph, which
updates inside the step) is checked at every row and checkpoint instead, naming the window of steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NoReturn

import torch

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.training.callbacks.base import Callback


def gradient_check(exp) -> Callable[[], str | None]:
    """A per-step test of the gradients: one sum per tensor and one synchronisation, ~2% of a digits step
    (benchmarks/nonfinite_check.py). Returns the name of a non-finite gradient, or None."""
    params = [
        (f"{prefix}.{name}", p)
        for prefix, module in (("model", exp.model), ("guide", exp.guide))
        for name, p in module.named_parameters()
        if p.requires_grad
    ]

    def check() -> str | None:
        grads = [(name, p.grad) for name, p in params if p.grad is not None]
        sums = [(g._values() if g.is_sparse else g).sum() for _, g in grads]  # sparse rows: their values
        if not sums or bool(torch.isfinite(torch.stack(sums)).all()):
            return None
        return checkpoint.first_nonfinite(grads)  # None where finite values merely summed to infinity

    return check


def stop_nonfinite(step: int, what: str, bad: str, fit) -> NoReturn:
    """Stop the run at ``step`` for a non-finite ``what`` (gradient, state) named ``bad``, saying what is kept."""
    kept = "nothing was saved"
    if fit.run_dir is not None and fit.state.saved_step is not None:
        kept = f"the last good checkpoint (step {fit.state.saved_step}) in {str(fit.run_dir)!r} is intact"
    raise PyroLVMError(
        f"non-finite {what} {bad} at step {step}; stopped without saving: {kept}; lower optim.lr or set optim.clip_norm"
    )


class NonFiniteGuard(Callback):
    def on_fit_start(self, fit) -> None:
        self.grads_finite = gradient_check(fit.exp)

    def before_update(self, fit, value: float) -> None:
        if isinstance(value, torch.Tensor):  # a deferred step's value stays on the device: checked at rows
            return  # and checkpoints (its eager steps, e.g. during KL warm-up, are checked here as any)
        step = fit.state.step + 1
        if not math.isfinite(value):
            last = f"step {fit.state.saved_step}" if fit.state.saved_step is not None else "none written yet"
            raise PyroLVMError(
                f"loss became {value} at step {step}; stopped without updating. The last good checkpoint "
                f"({last}) in {str(fit.run_dir)!r} is intact; lower optim.lr or set optim.clip_norm"
            )
        bad = self.grads_finite()
        if bad is not None:
            stop_nonfinite(step, "gradient", bad, fit)

    def on_row(self, fit, row: dict) -> None:
        self._deferred(fit)

    def on_checkpoint(self, fit) -> None:
        self._deferred(fit)

    def _deferred(self, fit) -> None:
        """A deferred step kind updated inside its step: a non-finite value stops the run naming the window of
        steps, before the row joins the history and before anything is saved (the checkpoint refuses it too)."""
        window = fit.strategy.nonfinite_since(fit.state.step) if fit.strategy.deferred else None
        if window is not None:
            stop_nonfinite(fit.state.step, "loss or gradient", f"in {window}", fit)
