"""The plain step: the batch of B rows in one piece, one loss with plate scale N/B, noise from the training
stream (torch's global RNG)."""

from __future__ import annotations

import torch

from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.seeding import replayed, rng_state
from pyro_lvm.training.strategies.base import Strategy


def bound_at_beta_one(exp, rng, target, c, idx, n: int) -> float:
    """During KL warm-up: the bound at β = 1 per datapoint, −loss(β = 1) / N, from the same draws as the step's
    loss (the stream is replayed from before the step, then handed back, so training draws nothing extra)."""
    with replayed(rng), torch.no_grad():
        return -float(exp.elbo.differentiable_loss(exp.model, exp.guide, target, c, idx=idx, num_data=n)) / n


class SingleStrategy(Strategy):
    """One process, the batch of step s in one piece, drawn by the recipe's batches."""

    name = "single"

    def __init__(self, exp, recipe) -> None:
        super().__init__(exp, recipe)
        self.num_data = len(exp.data.training_rows)
        self.batches = recipe.batches(exp)

    def step(self, step: int, beta: float) -> tuple[float, float]:
        exp, n = self.exp, self.num_data
        batch = self.batches.batch(step)
        target, c = exp.condition(batch.x, batch.y)
        rng = rng_state() if beta != 1.0 else None
        loss = loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=batch.idx, num_data=n, beta=beta)
        value = float(loss)
        return value, -value / n if rng is None else bound_at_beta_one(exp, rng, target, c, batch.idx, n)
