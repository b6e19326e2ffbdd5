"""The plain step: the batch of B rows in one piece, one loss with plate scale N/B, noise from the training
stream (torch's global RNG)."""

from __future__ import annotations

import torch

from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.seeding import replayed, rng_state
from pyro_lvm.training.strategies.base import Strategy


def bound_at_beta_one(exp, rng, target, c, idx, n: int) -> float:
    """During KL warm-up: the bound at β = 1 per datapoint, −loss(β = 1) / N, from the same draws as the step's
    loss (the stream is replayed from before the step, then handed back, so training draws nothing extra). With
    gradients on (none taken): Pyro's TraceEnum_ELBO refuses to compute a loss that cannot be differentiated."""
    with replayed(rng):
        return -float(exp.elbo.differentiable_loss(exp.model, exp.guide, target, c, idx=idx, num_data=n).detach()) / n


class SingleStrategy(Strategy):
    """One process, the batch of step s in one piece, drawn by the recipe's batches."""

    name = "single"

    def __init__(self, exp, recipe) -> None:
        super().__init__(exp, recipe)
        self.num_data = len(exp.data.training_rows)
        self.batches = recipe.batches(exp)

    def step(self, step: int, beta: float) -> tuple[float, float]:
        batch = self.batches.batch(step)
        target, c = self.exp.condition(batch.x, batch.y)
        return self.step_on(target, c, batch.idx, beta)

    def step_on(self, target, c, idx, beta: float) -> tuple[float, float]:
        """The step on one batch: its loss (gradients accumulated) and the bound at β = 1 per datapoint."""
        n = self.num_data
        rng = rng_state() if beta != 1.0 else None
        value = float(self.loss(target, c, idx, beta))
        return value, -value / n if rng is None else bound_at_beta_one(self.exp, rng, target, c, idx, n)

    def loss(self, target, c, idx, beta: float) -> torch.Tensor:
        """The loss of one batch, its gradients accumulated into ``.grad``: the Pyro program run eagerly (through
        Pyro's JIT where ``elbo.jit`` allows)."""
        exp = self.exp
        return loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=idx, num_data=self.num_data, beta=beta)
