"""The Rényi / IWAE objective, reduced per datapoint before the subsample scale.

With K reparameterised draws z_k ~ q(z | x_b, c_b) for each datapoint b of a batch of B rows out of N, and
log-weights computed from *unscaled* log-densities,

    log w_k(x_b) = Σ_observed log p(x_b | z_k, c_b) + β · Σ_latent [log p(z_k | c_b) − log q(z_k | x_b, c_b)],

the per-datapoint bound and the loss are

    L_α(x_b) = 1/(1 − α) · [logsumexp_k (1 − α) log w_k(x_b) − log K]      (α = 0: IWAE_K, Burda et al. 2016)
    loss     = −(N / B) · Σ_b L_α(x_b).

So the N/B subsample scale multiplies each datapoint's bound; it never enters the weights. Pyro's ``RenyiELBO``
applies the plate's N/B (and ``poutine.scale``) to the log-densities *inside* the logsumexp, so under subsampling
each datapoint's weights become w^(N/B): "the best of K particles", not a lower bound (measured on a digits VAE,
N/B = 20: 0.7 nats above the IWAE bound). tests/test_renyi.py pins the formula above by hand.

β (KL annealing) weights the latent sites' log p − log q inside each weight: at K = 1 (or α → 1) this is exactly
the β-weighted ELBO that Trace_ELBO optimises during warm-up, and β = 1 is the IWAE/Rényi bound itself. α = 1 is
the ELBO (use ``trace``) and is refused; every guide site must be reparameterised (pathwise gradients only).
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_lvm.errors import PyroLVMError


class RenyiObjective:
    """``differentiable_loss`` with the library's model/guide signature; see the module docstring."""

    def __init__(self, num_particles: int = 1, vectorize_particles: bool = True, alpha: float = 0.0) -> None:
        if not math.isfinite(alpha) or alpha == 1.0:
            raise PyroLVMError(
                f"elbo.alpha = {alpha} has no Rényi bound (alpha = 1 is the ELBO: use elbo.name = 'trace'); "
                "use alpha = 0 for IWAE"
            )
        self.num_particles, self.vectorize_particles, self.alpha = num_particles, vectorize_particles, alpha

    @staticmethod
    def _log_density(trace, beta: float, guide: bool) -> torch.Tensor:
        """The trace's share of log w, unscaled by plates: the model's Σ observed log p + β Σ latent log p, or the
        guide's −β Σ latent log q (its observed sites, if any, contribute nothing)."""
        total: torch.Tensor | float = 0.0
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site) or (guide and site["is_observed"]):
                continue
            if guide and not site["fn"].has_rsample:
                raise PyroLVMError(
                    f"elbo.name = 'renyi' needs reparameterised guide sites; site {site['name']!r} is not "
                    "(use elbo.name = 'trace')"
                )
            weight = 1.0 if site["is_observed"] else (-beta if guide else beta)
            total = total + weight * site["fn"].log_prob(site["value"])
        if not isinstance(total, torch.Tensor):
            raise PyroLVMError("elbo.name = 'renyi': the model has no sample sites to weight")
        return total

    def log_weights(self, model, guide, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor:
        """Unscaled log w_k(x_b) of K fresh draws, (K, B); differentiable (pathwise)."""
        K, B = self.num_particles, x.shape[0]
        beta = beta if isinstance(beta, torch.Tensor) else float(beta)  # a tensor in a traced step
        kwargs = dict(idx=idx, num_data=num_data, beta=1.0)  # beta is applied here, to unscaled log-densities

        def one() -> torch.Tensor:
            guide_trace = poutine.trace(guide).get_trace(x, c, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, c, **kwargs)
            return self._log_density(model_trace, beta, guide=False) + self._log_density(guide_trace, beta, guide=True)

        if self.vectorize_particles and K > 1:
            # the particle plate sits left of the model's "data" plate (dim -1): every site gets batch (K, B)
            with pyro.plate("renyi_particles", K, dim=-2):
                return one().expand(K, B)
        return torch.stack([one().expand(B) for _ in range(K)])  # (K, B)

    def per_datapoint(self, model, guide, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor:
        """L_α(x_b) for each row, (B,)."""
        lw = self.log_weights(model, guide, x, c, idx=idx, num_data=num_data, beta=beta)
        a = 1.0 - self.alpha
        return (torch.logsumexp(a * lw, dim=0) - math.log(self.num_particles)) / a

    def differentiable_loss(self, model, guide, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor:
        """−(N/B) Σ_b L_α(x_b); without ``num_data`` the batch is the dataset (scale 1)."""
        bound = self.per_datapoint(model, guide, x, c, idx=idx, num_data=num_data, beta=beta)
        scale = 1.0 if num_data is None else num_data / x.shape[0]
        return -scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))
