"""Priors p(z | c): each is a ``PyroModule`` whose ``forward(c)`` returns a distribution with event dim 1.

- ``standard_normal``: p(z) = N(0, I), ignores c.
- ``conditional``: p(z|c) = N(mu(c), diag sigma(c)²), a learned network of the condition (the CVAE prior).
- ``mog``: p(z) = sum_k pi_k N(z; mu_k, diag sigma_k²), learned; no closed-form KL, so ELBOs estimate it by
  Monte Carlo (TraceMeanField_ELBO falls back to sampling when ``kl_divergence`` is not registered). With
  ``prior.per_class`` and a label, a component per class: p(z | c = k) = N(mu_k, diag sigma_k²).
- ``vamp``: the VampPrior (Tomczak & Welling 2018), p(z) = 1/K sum_k q(z | u_k): K learned pseudo-inputs u_k
  pushed through the guide's encoder. Also a mixture: Monte-Carlo KL.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pydantic import Field
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.nn import GaussianHead
from pyro_lvm.registry import MAX_WIDTH, PRIORS, Options, Widths
from pyro_lvm.resources import Cost, network_cost


class ConditionalOptions(Options):
    hidden: Widths = Field(default_factory=lambda: [128])  # the prior network's widths
    net: str = "mlp"


class MixtureOptions(Options):
    num_components: int = Field(10, gt=0, le=MAX_WIDTH)
    per_class: bool = False  # with a label CVAE: one component per class, p(z|c=k) = component k


class VampOptions(Options):
    num_components: int = Field(10, gt=0, le=MAX_WIDTH)  # pseudo-inputs


@PRIORS.register("standard_normal")
class StandardNormalPrior(PyroModule):
    def __init__(self, latent_dim: int, **_: object) -> None:
        super().__init__()
        self.register_buffer("zeros", torch.zeros(latent_dim))

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        return dist.Normal(self.zeros, torch.ones_like(self.zeros)).to_event(1)


def network_prior_cost(opts, *, latent_dim: int, cond_dim: int, **_: object) -> Cost:
    """The prior network c -> (loc, scale) of z (its activations are few beside the decoder's: not counted)."""
    net = network_cost(getattr(opts, "net", None), [cond_dim, *getattr(opts, "hidden", []), 2 * latent_dim])
    return Cost(net.parameters)


def mixture_cost(opts, *, latent_dim: int, num_features: int, **_: object) -> Cost:
    """Each component's loc, scale and weight (and a VampPrior's pseudo-input)."""
    return Cost(getattr(opts, "num_components", 0) * (2 * latent_dim + 1 + num_features))


@PRIORS.register("conditional", ConditionalOptions, memory=network_prior_cost)
class ConditionalPrior(PyroModule):
    def __init__(
        self, latent_dim: int, cond_dim: int = 0, hidden: list[int] | None = None, net: str = "mlp", **_: object
    ) -> None:
        super().__init__()
        if cond_dim <= 0:
            raise PyroLVMError("prior 'conditional' needs a condition: use it with model.name = 'cvae'")
        self.net = GaussianHead(cond_dim, list(hidden or [128]), latent_dim, net=net)

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        if c is None:
            raise PyroLVMError("prior 'conditional' was called without a condition c")
        loc, scale = self.net(c)  # (B, D) each
        return dist.Normal(loc, scale).to_event(1)


@PRIORS.register("mog", MixtureOptions, memory=mixture_cost)
class MixturePrior(PyroModule):
    """With ``per_class`` (label CVAEs), one component per class and the label picks it:
    p(z | c = k) = N(mu_k, diag sigma_k²) (closed-form KL), while p(z) = Σ_k π_k N(mu_k, ...) stays a mixture."""

    def __init__(
        self, latent_dim: int, num_components: int = 10, cond_dim: int = 0, per_class: bool = False, **_: object
    ) -> None:
        super().__init__()
        if per_class:
            if cond_dim <= 0:
                raise PyroLVMError("prior.per_class needs a label: use it with model.condition = 'label'")
            num_components = cond_dim  # one component per class
        self.per_class = per_class
        g = torch.Generator().manual_seed(0)
        self.locs = PyroParam(torch.randn(num_components, latent_dim, generator=g))
        self.scales = PyroParam(torch.ones(num_components, latent_dim), constraint=constraints.positive)
        self.logits = PyroParam(torch.zeros(num_components))

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        if self.per_class and c is not None:
            return dist.Normal(c @ self.locs, c @ self.scales).to_event(1)  # one-hot (B, K) picks (B, D)
        components = dist.Normal(self.locs, self.scales).to_event(1)  # batch (K,), event (D,)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


@PRIORS.register("vamp", VampOptions, memory=mixture_cost)
class VampPrior(PyroModule):
    """p(z) = 1/K sum_k q(z | u_k) with learned pseudo-inputs u (K, P) and the guide's encoder q.

    The encoder belongs to the guide; the prior only borrows it (``attach_encoder``), kept outside this module's
    tree so its parameters are neither saved nor optimised twice. Pseudo-inputs start at 0.5 + small noise (the
    middle of the pixel range) and are unconstrained.
    """

    def __init__(self, latent_dim: int, num_features: int = 0, num_components: int = 10, cond_dim: int = 0, **_):
        super().__init__()
        if cond_dim > 0:
            raise PyroLVMError("prior 'vamp' is for the unconditional VAE; with a CVAE use 'conditional' or 'mog'")
        g = torch.Generator().manual_seed(0)
        self.pseudo_inputs = PyroParam(0.5 + 0.01 * torch.randn(num_components, num_features, generator=g))
        self.encode = None

    def attach_encoder(self, encode) -> None:
        object.__setattr__(self, "encode", encode)

    def forward(self, c: torch.Tensor | None = None) -> dist.Distribution:
        if self.encode is None:
            raise PyroLVMError(
                "prior 'vamp' needs an encoder: use it with guide.name = 'amortized' or 'semi_amortized'"
            )
        loc, scale = self.encode(self.pseudo_inputs)  # (K, D) each
        components = dist.Normal(loc, scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros_like(loc[:, 0])), components)
