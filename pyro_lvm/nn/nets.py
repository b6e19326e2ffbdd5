"""Plain ``torch.nn`` networks. No Pyro here.

Networks register by name (``NETWORKS``; ``model.net`` / ``guide.net`` / the conditional prior's ``net`` choose one):
a factory ``(n_in, n_out, hidden, **_) -> nn.Module`` mapping (..., n_in) to (..., n_out). Factories also get
``role`` ("encoder", "decoder"; none for a prior's network), ``image_shape`` ((H, W), (C, H, W) or None),
``conv_channels`` and ``observed_mask`` (a quadrant CVAE's observed pixels), which image networks (``conv.py``) use
and others ignore.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pyro_lvm.registry import NETWORKS


def mlp(sizes: list[int], activation: type[nn.Module] = nn.Softplus) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


@NETWORKS.register("mlp")
def mlp_network(n_in: int, n_out: int, hidden: list[int], **_: object) -> nn.Sequential:
    """The multilayer perceptron n_in -> hidden... -> n_out, softplus between layers."""
    return mlp([n_in, *hidden, n_out])


class GaussianHead(nn.Module):
    """A network whose output is split into a Gaussian's loc and scale: (..., n_in) -> (..., D), (..., D)."""

    def __init__(
        self, n_in: int, hidden: list[int], out_dim: int, min_scale: float = 1e-4, net: str = "mlp", **net_options
    ) -> None:
        super().__init__()
        # net_options (role, image_shape, conv_channels) reach the network factory; ``mlp`` ignores them
        self.net = NETWORKS.build(net, n_in=n_in, n_out=2 * out_dim, hidden=list(hidden), **net_options)
        self.min_scale = min_scale

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(inputs).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale


from pyro_lvm.nn import conv  # noqa: E402, F401  (registers the conv network)
