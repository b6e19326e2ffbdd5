"""Datasets from tensors a user already holds in memory."""

from __future__ import annotations

import torch
from pydantic import ValidationError

from pyro_lvm.config.messages import format_error
from pyro_lvm.data.datasets import DataOptions, Dataset, Split, _finish
from pyro_lvm.errors import PyroLVMError


def from_tensors(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    image_shape: tuple[int, int] | None = None,
    test: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    name: str = "tensors",
    **options: object,
) -> Dataset:
    """A ``Dataset`` from tensors already in memory: ``x`` (N, P) (or (N, H, W), flattened), optional integer
    labels ``y`` (N,), an optional test set ``test = (x_test, y_test)``; ``options`` are the data options
    (``binarize``, ``val_fraction``, ``test_fraction``, ``seed``, ...; binarize defaults to 'none' here)."""
    try:
        opts = DataOptions.model_validate({"binarize": "none", **options})
    except ValidationError as err:
        raise PyroLVMError(format_error(err, DataOptions, "from_tensors")) from None
    x = torch.as_tensor(x)
    if x.dim() == 3:
        image_shape = image_shape or (x.shape[1], x.shape[2])
        x = x.reshape(len(x), -1)
    if x.dim() != 2 or len(x) == 0:
        raise PyroLVMError(f"x must be a non-empty (N, P) or (N, H, W) tensor, got shape {tuple(x.shape)}")

    def split(x: torch.Tensor, y: torch.Tensor | None) -> Split:
        x = torch.as_tensor(x).reshape(len(x), -1)
        x = x if x.is_floating_point() else x.float()  # the experiment casts to train.dtype
        y = torch.zeros(len(x), dtype=torch.long) if y is None else torch.as_tensor(y).long()
        if y.shape != (len(x),):
            raise PyroLVMError(f"labels have shape {tuple(y.shape)} but x has {len(x)} rows; pass y of shape (N,)")
        return Split(x, y)

    train = split(x, y)
    num_classes = int(train.y.max()) + 1 if y is not None else 1
    ds = _finish(opts, train, None if test is None else split(*test), image_shape, num_classes)
    ds.name = name
    return ds
