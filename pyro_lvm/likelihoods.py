"""Likelihoods p(x | decoder output): each maps the decoder's (..., P) output to a distribution with event dim 1.

- ``bernoulli``: x_p ~ Bernoulli(sigmoid(logit_p)).
- ``gaussian``: x_p ~ N(mu_p, s²), s fixed or learned (one scalar).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyro_lvm.registry import Registry

LIKELIHOODS: Registry[PyroModule] = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(PyroModule):
    binary = True

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        # validate_args=False: continuous (grey) targets are allowed for dynamic-binarization means and
        # for the continuous-valued digits when a user chooses binarize = "none" (then log p is not a density).
        return dist.Bernoulli(logits=out, validate_args=False).to_event(1)


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(PyroModule):
    binary = False

    def __init__(self, scale: float = 0.1, learn_scale: bool = False, **_: object) -> None:
        super().__init__()
        if learn_scale:
            self.scale = PyroParam(torch.tensor(float(scale)), constraint=constraints.positive)
        else:
            self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return dist.Normal(out, self.scale).to_event(1)
