"""Amortized guides: an encoder predicts q(z | x, c) = N(mu(x, c), diag sigma(x, c)²).

- ``amortized``: the encoder alone.
- ``semi_amortized``: the encoder's (mu, sigma) start K gradient-ascent steps on the per-datapoint ELBO under the
  current model (Kim et al. 2018, SA-VAE); gradients flow through none, the first, or all refinement steps.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from pyro.nn import PyroModule

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides.local import needs_x, refine, sample_z
from pyro_lvm.models.vae import broadcast_cat, data_plate
from pyro_lvm.nn import GaussianHead
from pyro_lvm.registry import GUIDES, Options, Widths
from pyro_lvm.resources import Cost, network_cost


class AmortizedOptions(Options):
    hidden: Widths = Field(default_factory=lambda: [128, 128])  # encoder widths
    net: str = "mlp"  # the encoder's network (a registered network)
    conv_channels: Widths = Field(default_factory=lambda: [32, 64])  # net = "conv": channels per halving of H, W


class SemiAmortizedOptions(AmortizedOptions):
    refine_steps: int = Field(5, ge=0)  # K gradient steps per batch
    refine_lr: float = Field(0.1, gt=0.0)
    refine_backprop: Literal["none", "first", "all"] = "first"


def encoder_cost(opts, *, latent_dim: int, num_features: int, cond_dim: int, **_: object) -> Cost:
    """The encoder (x, c) -> (loc, scale) of z's memory, for the check before it is built; also the estimate of a
    user's guide that names no cost (from ``net`` / ``hidden`` where its options have them)."""
    hidden = getattr(opts, "hidden", [])
    return network_cost(getattr(opts, "net", None), [num_features + cond_dim, *hidden, 2 * latent_dim])


@GUIDES.register("amortized", AmortizedOptions, memory=encoder_cost)
class AmortizedGuide(PyroModule):
    def __init__(
        self,
        num_features: int,
        latent_dim: int,
        cond_dim: int = 0,
        hidden: list[int] | None = None,
        net: str = "mlp",
        conv_channels: list[int] | None = None,
        image_shape=None,
        observed_mask=None,
        **_: object,
    ) -> None:
        super().__init__()
        self.encoder = GaussianHead(
            num_features + cond_dim, list(hidden or [128, 128]), latent_dim, net=net, role="encoder",
            image_shape=image_shape, conv_channels=conv_channels, observed_mask=observed_mask,
        )  # fmt: skip

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(broadcast_cat(x, c))  # (B, D), (B, D)

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0, batch_size=None, observe=True):
        needs_x(x)  # batch_size and observe are the model's: a guide reads x regardless
        with data_plate(x, idx, num_data):
            loc, scale = self.encode(x, c)
            return sample_z(loc, scale, beta)


@GUIDES.register("semi_amortized", SemiAmortizedOptions, memory=encoder_cost)
class SemiAmortizedGuide(AmortizedGuide):
    """Encoder start, then K steps of gradient ascent on ELBO(mu, sigma) = E_q[log p(x, z | c)] + H[q]."""

    def __init__(
        self,
        *args: object,
        refine_steps: int = 5,
        refine_lr: float = 0.1,
        refine_backprop: str = "first",
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # the encoder: AmortizedGuide's arguments
        self.refine_steps = refine_steps
        self.refine_lr = refine_lr
        self.refine_backprop = refine_backprop
        self.model: PyroModule | None = None  # set by ``attach``: refinement needs log p(x, z)

    def attach(self, model: PyroModule) -> None:
        # Stored outside the module tree so the model's parameters are not counted twice as the guide's.
        object.__setattr__(self, "model", model)

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0, batch_size=None, observe=True):
        needs_x(x)  # batch_size and observe are the model's: a guide reads x regardless
        loc, scale = self.encode(x, c)
        if self.model is None:
            raise PyroLVMError("semi_amortized guide has no model to refine against; call guide.attach(model)")
        loc, scale = refine(self.model, x, c, loc, scale, self.refine_steps, self.refine_lr, self.refine_backprop)
        with data_plate(x, idx, num_data):
            return sample_z(loc, scale, beta)
