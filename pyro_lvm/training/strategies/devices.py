"""The device a run's tensors live on, resolved (and refused where it is absent) in one place."""

from __future__ import annotations

import torch

from pyro_lvm.errors import PyroLVMError


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device; a CUDA device on a machine without one is one line."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PyroLVMError(f"train.device = {name!r} but no CUDA device is available; use train.device = 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PyroLVMError(f"train.device = {name!r} is not a torch device; use 'cpu' or 'cuda'") from None
