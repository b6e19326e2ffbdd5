"""Likelihoods for real-valued pixels in [0, 1], so the log-likelihood of a grey image is a proper density or mass.

- ``continuous_bernoulli`` (Loaiza-Ganem & Cunningham 2019): p(x | λ) = C(λ) λ^x (1 − λ)^(1−x) on [0, 1], with
  C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ) (and C(½) = 2): the Bernoulli's shape made a density. torch's distribution.
- ``discretized_logistic`` (Salimans et al. 2017, PixelCNN++; Kingma et al. 2016): 8-bit pixels x = k / 255; the
  mass of bin k is the logistic(μ, s) probability of [x − ½/255, x + ½/255], with the edge bins taking the tails
  (k = 0: (−∞, ½/255], k = 255: [1 − ½/255, ∞)), so the 256 masses of a pixel sum to 1. The decoder gives μ (through
  a sigmoid), each pixel has a learned log s. log p(x) is then a log-probability, and bits/dim = −log p(x) / (P ln 2).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_lvm.context import host_checks
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import LIKELIHOODS

LEVELS = 256  # 8-bit pixels
HALF_BIN = 0.5 / (LEVELS - 1)


@LIKELIHOODS.register("continuous_bernoulli")
class ContinuousBernoulliLikelihood(PyroModule):
    binary = False

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        # Pyro validates the support [0, 1] while its validation is on (outside training, by default)
        return dist.ContinuousBernoulli(logits=out).to_event(1)


class DiscretizedLogistic(dist.TorchDistribution):
    """Independent 8-bit pixels with event dim 1: loc (..., P) in (0, 1), log_scale (P,) or (..., P)."""

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.independent(constraints.unit_interval, 1)

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        self.loc, self.log_scale = loc, log_scale.expand_as(loc)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:  # the loc: the logistic's mean before the edge bins' clipping
        return self.loc

    def expand(self, batch_shape, _instance=None) -> DiscretizedLogistic:
        shape = (*batch_shape, *self.event_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.log_scale.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if is_validation_enabled() and host_checks() and not torch._C._get_tracing_state():
            off = (value * (LEVELS - 1) - (value * (LEVELS - 1)).round()).abs() > 1e-4
            if off.any() or (value < 0).any() or (value > 1).any():
                raise PyroLVMError(
                    "the discretized_logistic likelihood needs 8-bit pixels x = k/255 in [0, 1] "
                    f"({float(off.float().mean()):.1%} of the values are not); use data.binarize = 'none' on 8-bit "
                    "images, or likelihood.name = 'continuous_bernoulli' for other values in [0, 1]"
                )
        return discretized_logistic_log_mass(value, self.loc, self.log_scale).sum(-1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + self.log_scale.exp() * (u.log() - (-u).log1p())  # logistic quantile
            return (x.clamp(0, 1) * (LEVELS - 1)).round() / (LEVELS - 1)


def discretized_logistic_log_mass(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) per pixel, elementwise, exact in every bin and stable in the tails. With a, b the standardised
    upper and lower bin edges (a − b = 1/(255 s) > 0):

        log(σ(a) − σ(b)) = b + log(expm1(a − b)) − softplus(a) − softplus(b)      (e^a − e^b over (1+e^a)(1+e^b))

    and the edge bins log σ(a) (k = 0) and log(1 − σ(b)) (k = 255)."""
    inv_s = torch.exp(-log_scale)
    centred = x - loc
    upper, lower = inv_s * (centred + HALF_BIN), inv_s * (centred - HALF_BIN)
    log_cdf_upper = -F.softplus(-upper)  # log σ(upper): the k = 0 bin
    log_survival_lower = -F.softplus(lower)  # log (1 − σ(lower)): the k = 255 bin
    interior = lower + torch.log(torch.expm1(upper - lower)) - F.softplus(upper) - F.softplus(lower)
    return torch.where(x < HALF_BIN, log_cdf_upper, torch.where(x > 1 - HALF_BIN, log_survival_lower, interior))


@LIKELIHOODS.register("discretized_logistic")
class DiscretizedLogisticLikelihood(PyroModule):
    binary = False
    levels = LEVELS  # the data are counts of 1/255: evaluation reports bits/dim beside nats

    def __init__(self, num_features: int, **_: object) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((num_features,), math.log(1 / 64)))  # one learned scale a pixel

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return DiscretizedLogistic(torch.sigmoid(out), self.log_scale.clamp(min=-9.0))
