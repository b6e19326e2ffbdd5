"""Steps through the pure step function (``pyro_lvm.infer.pure``): ``traced`` replays the step's recorded graph of
torch operations, ``compiled`` runs that graph through ``torch.compile``. Same batches, same draws and (traced) the
same numbers as the eager step; only the Python around the arithmetic is gone.

A program the trace cannot express (control flow on tensor values, Pyro's validation on, too many batch shapes)
takes the eager step instead, with one warning that says why; ``path`` records which ran (metrics.json)."""

from __future__ import annotations

import warnings

import torch
from pyro.infer.util import is_validation_enabled

from pyro_lvm import config
from pyro_lvm.infer.pure import PureStep
from pyro_lvm.training.strategies.single import SingleStrategy


def plain_objective(exp):
    """The experiment's objective built with ``elbo.jit = 'off'``: the plain Pyro ELBOs, which the trace records
    (a TorchScript function inside the trace would be opaque to it)."""
    if not hasattr(exp.cfg.elbo, "jit"):
        return exp.elbo
    cfg = config.with_overrides(exp.cfg, ["elbo.jit=off"])
    return exp.recipe.objective(cfg, exp.data, exp.model)


class TracedStrategy(SingleStrategy):
    """One process, the batch in one piece, the loss and gradients from the traced pure function."""

    name = "traced"
    compile = False

    def __init__(self, exp, recipe) -> None:
        super().__init__(exp, recipe)
        self.pure = PureStep(plain_objective(exp), exp.model, exp.guide, compile=self.compile)
        self.eager_reason: str | None = None

    @property
    def path(self) -> str:
        """What took the latest step (the summary's ``elbo_path``)."""
        if self.eager_reason is not None:
            return f"{self.exp.cfg.elbo.name}, eager step ({self.eager_reason})"
        return f"{self.exp.cfg.elbo.name}, {self.pure.path}"

    def loss(self, target, c, idx, beta: float) -> torch.Tensor:
        if self.eager_reason is None:
            if is_validation_enabled():
                self._eager("Pyro's validation is on (train.pyro_validation): its checks read values on the host")
            else:
                loss = self.pure(target, c, idx=idx, num_data=self.num_data, beta=beta)
                if loss is not None:
                    return loss
                self._eager(f"the step cannot be traced: {self.pure.failure}")
        return super().loss(target, c, idx, beta)

    def _eager(self, reason: str) -> None:
        self.eager_reason = reason
        warnings.warn(f"train.step = {self.name!r}: {reason}; taking eager steps", stacklevel=3)


class CompiledStrategy(TracedStrategy):
    """The traced function through ``torch.compile`` (inductor); the first step compiles (seconds to a minute)."""

    name = "compiled"
    compile = True
