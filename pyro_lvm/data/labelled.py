"""Scarce labels (semi-supervised training): which training rows keep their label, and batches that draw labelled
and unlabelled rows side by side.

``data.labelled = n`` keeps the labels of n training rows, class-balanced (n // K per class, one more for the
first n mod K classes) and chosen with the split seed ``data.seed`` and ``data.label_seed`` (another draw of
labelled rows over the same splits); every other training row is unlabelled.
Validation and test rows keep their labels for evaluation (accuracy), never for training.
"""

from __future__ import annotations

import torch

from pyro_lvm.data.batches import Batch, Batches
from pyro_lvm.data.datasets import Split
from pyro_lvm.errors import PyroLVMError

UNLABELLED = -1  # the label a batch carries for a row whose label is hidden


def labelled_mask(y: torch.Tensor, count: int, num_classes: int, seed: int) -> torch.Tensor:
    """(N,) bool, True for the ``count`` rows that keep their label (class-balanced, seeded)."""
    if num_classes < 2:
        raise PyroLVMError(
            "data.labelled chooses labelled rows per class, but this dataset has no labels; use a labelled dataset "
            "(digits, fashion_mnist, mnist, or from_tensors(x, y)) or drop data.labelled"
        )
    if count > len(y):
        raise PyroLVMError(
            f"data.labelled = {count} but the training set has {len(y)} rows; use data.labelled <= {len(y)}"
        )
    if count < num_classes:
        raise PyroLVMError(
            f"data.labelled = {count} is fewer than the {num_classes} classes; every class needs a labelled row: "
            f"use data.labelled >= {num_classes}"
        )
    g = torch.Generator().manual_seed(seed + 11)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for k in range(num_classes):
        want = count // num_classes + (1 if k < count % num_classes else 0)
        rows = torch.nonzero(y.cpu() == k).flatten()
        if len(rows) < want:
            raise PyroLVMError(
                f"data.labelled = {count} asks for {want} labelled rows of class {k}, which has {len(rows)} "
                "training rows; lower data.labelled"
            )
        mask[rows[torch.randperm(len(rows), generator=g)[:want]]] = True
    return mask.to(y.device)


class SemiSupervisedBatches:
    """Each step: a batch of min(B, N_u) unlabelled rows (an epoch is a pass over them) and min(B, N_l) labelled
    rows (cycling through their own shuffled passes). Labelled rows come first; unlabelled rows carry the label
    ``UNLABELLED``. As with ``Batches``, the order depends only on (seed, step)."""

    def __init__(self, split: Split, labelled: torch.Tensor, batch_size: int, seed: int, dynamic: bool) -> None:
        self.rows_l = torch.nonzero(labelled).flatten()
        self.rows_u = torch.nonzero(~labelled).flatten()
        if len(self.rows_u) == 0:
            raise PyroLVMError("every training row is labelled: drop data.labelled to train on all labels")
        self.split = split
        self.unlabelled = Batches(Split(split.x[self.rows_u], split.y[self.rows_u]), batch_size, seed, dynamic)
        # the labelled rows' own passes: another seed, so their order is not the unlabelled rows' order
        self.labelled = Batches(Split(split.x[self.rows_l], split.y[self.rows_l]), batch_size, seed + 7919, dynamic)
        self.steps_per_epoch = self.unlabelled.steps_per_epoch
        self.batch_size = self.unlabelled.batch_size + self.labelled.batch_size

    @property
    def num_labelled(self) -> int:
        return len(self.rows_l)

    def batch(self, step: int) -> Batch:
        lab = self.labelled.batch(step)  # step k of its own cycle: epoch k // steps_per_epoch of the labelled rows
        unl = self.unlabelled.batch(step)
        idx = torch.cat([self.rows_l[lab.idx], self.rows_u[unl.idx]])  # (B_l + B_u,) training rows
        y = torch.cat([lab.y, torch.full_like(unl.y, UNLABELLED)])
        return Batch(idx, torch.cat([lab.x, unl.x]), y)


def training_batches(split: Split, labelled: torch.Tensor | None, batch_size: int, seed: int, dynamic: bool):
    """The training loop's batches: ``Batches``, or ``SemiSupervisedBatches`` when some labels are hidden."""
    if labelled is None:
        return Batches(split, batch_size, seed, dynamic)
    return SemiSupervisedBatches(split, labelled, batch_size, seed, dynamic)
