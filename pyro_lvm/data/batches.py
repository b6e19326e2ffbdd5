"""Minibatches that carry dataset indices. The order of epoch e depends only on (seed, e), so training can
resume mid-epoch exactly without storing sampler state."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from pyro_lvm.data.datasets import Split


class Batch(NamedTuple):
    idx: torch.Tensor  # (B,) rows of the split: per-datapoint guides index their local parameters with it
    x: torch.Tensor  # (B, P)
    y: torch.Tensor  # (B,)


def note_batch_clamp(batch_size: int, num_rows: int, key: str = "train.batch_size") -> None:
    """Never a silent clamp: a batch larger than the rows it is drawn from takes all of them, and says so.

    A notice, not a refusal: "the whole split every step" is a legitimate wish (full-batch gradients), and the
    exact row count depends on data.max_train, data.val_fraction and the dataset, so a user cannot be asked to
    type it; but the step then differs from what the value reads as, so it is named once, where training starts."""
    if batch_size > num_rows:
        warnings.warn(
            f"{key} = {batch_size} is more than the {num_rows} training rows: each step uses all {num_rows} "
            f"(full-batch gradients, one step per epoch); set {key} <= {num_rows} to choose the batch",
            stacklevel=2,
        )


class Batches:
    """Shuffled batches of a split; the last batch of an epoch may be smaller."""

    def __init__(self, split: Split, batch_size: int, seed: int, dynamic_binarize: bool = False) -> None:
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.seed = seed
        self.dynamic_binarize = dynamic_binarize
        self.steps_per_epoch = math.ceil(len(split) / self.batch_size)
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(len(self.split), generator=g).to(self.split.x.device)
            self._epoch = epoch
        return self._order

    def batch(self, step: int) -> Batch:
        epoch, pos = divmod(step, self.steps_per_epoch)
        idx = self.order(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]
        x = self.split.x[idx]
        if self.dynamic_binarize:
            x = torch.bernoulli(x)  # global torch RNG: saved in checkpoints, so resume stays exact
        return Batch(idx, x, self.split.y[idx])


def in_order(split: Split, batch_size: int):
    """Unshuffled batches over a whole split (evaluation)."""
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)), device=split.x.device)
        yield Batch(idx, split.x[idx], split.y[idx])
