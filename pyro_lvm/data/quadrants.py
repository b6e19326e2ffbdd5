"""Quadrant masks for the image-completion CVAE (Sohn et al. 2015): c shows some quadrants, x is the rest."""

from __future__ import annotations

import torch

from pyro_lvm.errors import PyroLVMError


def quadrant_mask(image_shape: tuple[int, ...], observed: int) -> torch.Tensor:
    """Flat boolean mask (H*W,) for image_shape (H, W), or (C*H*W,) for (C, H, W) (every channel of a pixel
    together), True where a pixel is observed. Quadrants are taken in the order bottom-left, bottom-right, top-right
    (Pyro tutorial convention: 1 quadrant shows bottom-left)."""
    if observed not in (1, 2, 3):
        raise PyroLVMError(f"observed quadrants must be 1, 2 or 3, got {observed}")
    if len(image_shape) == 3:
        channels, *hw = image_shape
        return quadrant_mask(tuple(hw), observed).reshape(hw).expand(channels, *hw).reshape(-1)
    h, w = image_shape
    mask = torch.zeros(h, w, dtype=torch.bool)
    hh, hw = h // 2, w // 2
    corners = [(slice(hh, h), slice(0, hw)), (slice(hh, h), slice(hw, w)), (slice(0, hh), slice(hw, w))]
    for rows, cols in corners[:observed]:
        mask[rows, cols] = True
    return mask.reshape(-1)
