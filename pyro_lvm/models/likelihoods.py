"""Likelihoods p(x | decoder output): each maps the decoder's (..., P) output to a distribution with event dim 1.

- ``bernoulli``: x_p ~ Bernoulli(sigmoid(logit_p)).
- ``gaussian``: x_p ~ N(mu_p, s²), s fixed or learned (one scalar).
- ``continuous_bernoulli``, ``discretized_logistic``: real-valued pixels in [0, 1] (``pixels.py``).
Each is built with its options and ``num_features`` (P).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pydantic import Field
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints
from torch.nn import functional as F

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import LIKELIHOODS, Options


class GaussianOptions(Options):
    scale: float = Field(0.1, gt=0.0)  # fixed (or initial, if learned) observation scale
    learn_scale: bool = False


def refuse_non_binary(value: torch.Tensor) -> None:
    """A Bernoulli log-probability is one of binary data only: grey targets are refused with the fix."""
    grey = (value != 0) & (value != 1)
    if bool(grey.any()):
        raise PyroLVMError(
            f"the bernoulli likelihood got non-binary targets ({float(grey.float().mean()):.1%} of the values are not "
            "0 or 1); set data.binarize = 'static' or 'dynamic', or use likelihood.name = 'gaussian' for grey data"
        )


def check_targets(likelihood, x: torch.Tensor) -> None:
    """Before training: a binary likelihood's training targets must be 0 or 1 (else only evaluation, with Pyro's
    validation on, would refuse them, after the budget is spent)."""
    if getattr(likelihood, "binary", False):
        refuse_non_binary(x)


class BernoulliLogits(dist.TorchDistribution):
    """Independent Bernoulli pixels with event dim 1, log p(x) = −Σ_p BCE-with-logits(logit_p, x_p).

    The same value as ``dist.Bernoulli(logits=...).to_event(1)``, computed without torch's broadcast-and-clone of
    the logits (one full-size copy forward and backward): about 3 ms of a 33 ms step at batch 1024 on 2 CPU cores
    (benchmarks/vae_step.py). While Pyro's validation is on, targets other than 0 and 1 are refused with one line:
    the Bernoulli log-likelihood of a grey image is not a probability of anything.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.unit_interval, 1)

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def expand(self, batch_shape, _instance=None) -> BernoulliLogits:
        return BernoulliLogits(self.logits.expand(*batch_shape, *self.event_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if is_validation_enabled() and not torch._C._get_tracing_state():
            refuse_non_binary(value)
        logits = self.logits
        if value.shape != logits.shape:  # particles: logits (K, B, P) against x (B, P)
            shape = torch.broadcast_shapes(value.shape, logits.shape)
            logits, value = logits.expand(shape), value.expand(shape)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return torch.bernoulli(self.mean.expand(torch.Size(sample_shape) + self.logits.shape))


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(PyroModule):
    binary = True

    def __init__(self, **_: object) -> None:
        super().__init__()

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        return BernoulliLogits(out)


@LIKELIHOODS.register("gaussian", GaussianOptions)
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


from pyro_lvm.models import pixels  # noqa: E402, F401  (registers the real-valued-pixel likelihoods)
