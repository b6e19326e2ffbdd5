"""What a way of taking a training step owns (after Lightning's ``Strategy``): its place among the ranks, the
device, the batches it draws, the step's loss and gradients, reductions across ranks, and the consolidation of
sharded state for checkpoints. The loop (``pyro_lvm.training.loop.fit``) only asks it."""

from __future__ import annotations

from typing import Any

from pyro_lvm.training.strategies.ddp import Ranks


class Strategy:
    """Base of every step kind. A subclass sets ``num_data`` (N, the plate size of the whole training set) and
    ``batches`` (its ``steps_per_epoch`` counts epochs) in ``__init__(exp, recipe)`` and implements ``step``."""

    name = "base"
    num_data: int
    batches: Any
    # True for a step kind whose step() returns device tensors (loss, bound) that are read only at the loop's rows
    # and checkpoints; it then reports non-finite values there (``nonfinite_since``), not per step
    deferred = False

    def __init__(self, exp: Any, recipe: Any) -> None:
        self.exp, self.recipe, self.ranks = exp, recipe, Ranks()

    @property
    def is_lead(self) -> bool:
        """The rank that prints and writes (the only rank of a one-process run)."""
        return self.ranks.lead

    @property
    def device(self):
        return self.exp.device

    def step(self, step: int, beta: float) -> tuple[float, float]:
        """Step ``step``'s loss (its gradients accumulated into ``.grad``) and the bound at β = 1 per datapoint."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Before each step."""
        self.exp.optim.zero_grad()

    def update(self) -> None:
        """After each step and the callbacks' checks: the optimiser's update (a step kind may have made it)."""
        self.exp.optim.step()

    def nonfinite_since(self, step: int) -> str | None:
        """A deferred step kind: the window of steps with a non-finite loss or gradient since the last call."""
        return None

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one of them (a time budget, a stop request)."""
        return self.ranks.any(flag)

    def restorable(self, state: dict) -> dict:
        """A checkpoint's state as this rank loads it (a rank of a sharded run: its own rows)."""
        return state

    def consolidate(self, state: dict) -> dict | None:
        """The state to write (every rank's shards in the one-process layout) on the lead rank, None elsewhere.
        Called on every rank: it may be a collective."""
        return state if self.is_lead else None
