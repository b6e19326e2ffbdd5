"""Plain ``torch.nn`` networks. No Pyro here."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Softplus) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """An MLP whose output is split into a Gaussian's loc and scale: (..., n_in) -> (..., D), (..., D)."""

    def __init__(self, n_in: int, hidden: list[int], out_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.net = mlp([n_in, *hidden, 2 * out_dim])
        self.min_scale = min_scale

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(inputs).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale
