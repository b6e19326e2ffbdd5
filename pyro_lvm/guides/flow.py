"""Normalizing-flow posteriors from Pyro's transform library.

q(z | x) = (T_K ∘ … ∘ T_1)#N(mu(x), diag sigma(x)²): a diagonal Gaussian base warped by K conditional autoregressive
transforms (``affine``: inverse autoregressive flow, Kingma et al. 2016; ``spline``: rational-quadratic splines,
Durkan et al. 2019), each conditioned on a context h(x) that the encoder outputs beside (mu, sigma). By the change of
variables, with u_0 ~ N(mu, sigma²) and u_k = T_k(u_{k-1}), z = u_K:

    log q(z | x) = log N(u_0; mu, sigma²) − Σ_k log |det ∂T_k / ∂u_{k-1}|

Sampling runs each transform forward (one network pass). Pyro caches each transform's last (input, output) pair,
so scoring the guide's own draws (the ELBO, IWAE) reuses them; scoring any other z (a defensive mixture's other
component, draws from NUTS) runs the exact inverse, D sequential network passes per transform.

Every transform starts as the identity: the last layer of its autoregressive network outputs zero shift and log
scale (``affine``), or equal bins with unit slopes (``spline``; exact but for Pyro's end knots, whose slope is pinned
at 0.999: a few thousandths of a nat from the base, see the tests). A flow guide so starts as the Gaussian guide with the same
encoder and moves away only where that raises the ELBO.
"""

from __future__ import annotations

import math
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field
from pyro import poutine
from pyro.distributions import transforms as T
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from pyro_lvm.guides.amortized import AmortizedOptions, encoder_cost
from pyro_lvm.guides.local import MIN_SCALE, needs_x
from pyro_lvm.models.vae import broadcast_cat, data_plate
from pyro_lvm.registry import GUIDES, MAX_WIDTH, NETWORKS, Widths

FlowKind = Literal["affine", "spline"]
SPLINE_MIN_DERIVATIVE = 1e-3  # pyro.distributions.transforms.spline's min_derivative


class FlowOptions(AmortizedOptions):
    flows: int = Field(2, ge=1, le=64)  # K conditional transforms
    kind: FlowKind = "affine"
    flow_hidden: Widths = Field(default_factory=lambda: [64])  # widths of each transform's autoregressive network
    context_dim: int = Field(16, ge=1, le=MAX_WIDTH)  # size of the context h(x) the transforms are conditioned on


def build_flows(latent_dim: int, context_dim: int, count: int, kind: str, hidden: list[int]) -> nn.ModuleList:
    """K conditional autoregressive transforms of R^latent_dim, each conditioned on a (..., context_dim) context."""
    flows = []
    for _ in range(count):
        if kind == "affine":
            flow = T.conditional_affine_autoregressive(latent_dim, context_dim, hidden_dims=list(hidden))
            last = flow.nn.layers[-1]  # outputs (shift, log scale): zero makes the transform the identity
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        else:
            flow = T.conditional_spline_autoregressive(latent_dim, context_dim, hidden_dims=list(hidden))
            last = flow.nn.layers[-1]  # outputs (widths 8, heights 8, derivatives 7, lambdas 8) x latent_dim
            nn.init.zeros_(last.weight)
            with torch.no_grad():  # equal bins, interior knot slopes 1 (Pyro pins the two end knots at 0.999)
                last.bias.zero_()
                last.bias[16 * latent_dim : 23 * latent_dim] = math.log(math.expm1(1.0 - SPLINE_MIN_DERIVATIVE))
        flows.append(flow)
    return nn.ModuleList(flows)


def flow_distribution(
    loc: torch.Tensor, scale: torch.Tensor, context: torch.Tensor, flows: nn.ModuleList
) -> dist.TransformedDistribution:
    """The flow q with base N(loc, diag scale²) and every transform conditioned on ``context``: batch (B,), event
    (D,) for loc, scale (B, D) and context (B, C). Draws of shape (S, B, D) broadcast the context."""
    base = dist.Normal(loc, scale).to_event(1)
    return dist.TransformedDistribution(base, [flow.condition(context) for flow in flows])


@GUIDES.register("amortized_flow", FlowOptions, memory=encoder_cost)
class AmortizedFlowGuide(PyroModule):
    """An encoder gives the base (mu, sigma) and the context h of K conditional autoregressive transforms."""

    def __init__(
        self,
        num_features: int,
        latent_dim: int,
        cond_dim: int = 0,
        hidden: list[int] | None = None,
        net: str = "mlp",
        flows: int = 2,
        kind: str = "affine",
        flow_hidden: list[int] | None = None,
        context_dim: int = 16,
        conv_channels: list[int] | None = None,
        image_shape=None,
        observed_mask=None,
        **_: object,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        n_out = 2 * latent_dim + context_dim
        self.encoder = NETWORKS.build(
            net, n_in=num_features + cond_dim, n_out=n_out, hidden=list(hidden or [128, 128]), role="encoder",
            image_shape=image_shape, conv_channels=conv_channels, observed_mask=observed_mask,
        )  # fmt: skip
        self.flows = build_flows(latent_dim, context_dim, flows, kind, list(flow_hidden or [64]))

    def encode_base(self, x: torch.Tensor, c: torch.Tensor | None = None):
        """(loc, scale, context) of (B, D), (B, D), (B, C). Not ``encode``: the VampPrior's use of an encoder as a
        Gaussian q(z | u) does not hold for a flow."""
        out = self.encoder(broadcast_cat(x, c))
        loc, raw_scale, context = out.split([self.latent_dim, self.latent_dim, out.shape[-1] - 2 * self.latent_dim], -1)
        return loc, F.softplus(raw_scale) + MIN_SCALE, context

    def distribution(self, x: torch.Tensor, c: torch.Tensor | None = None) -> dist.TransformedDistribution:
        return flow_distribution(*self.encode_base(x, c), self.flows)

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0, batch_size=None, observe=True):
        needs_x(x)  # batch_size and observe are the model's: a guide reads x regardless
        with data_plate(x, idx, num_data):
            q = self.distribution(x, c)
            with poutine.scale(scale=beta):
                return pyro.sample("z", q)
