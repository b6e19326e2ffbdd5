"""Forward vs reverse KL on a bimodal target: which Gaussian q each direction picks.

Target p(z) = ½ N(z; −μ, σ² I) + ½ N(z; μ, σ² I), in 1-D or 2-D; q(z) = N(m, L Lᵀ) (full covariance).

- Reverse KL(q ‖ p) = E_q[log q(z) − log p(z)] is what VI minimises: the model ``pyro.sample("z", p)`` has no
  observations and p is normalised, so Trace_ELBO's loss is exactly KL(q ‖ p). It is *mode-seeking*
  (zero-forcing): q pays log q / p wherever q puts mass and p has little, so q hides inside one mode.
- Forward KL(p ‖ q) = E_p[log p(z) − log q(z)] is minimised by maximum likelihood on samples of p; for a Gaussian q
  the optimum matches p's mean and covariance. It is *mass-covering* (zero-avoiding): q must put mass wherever p
  has any, so it straddles both modes, with its mean between them and a variance larger than either mode's.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from pyro_lvm.context import scoped

REVERSE = "reverse KL(q‖p) (VI)"
FORWARD = "forward KL(p‖q)"


def bimodal_target(dim: int, separation: float = 4.0, scale: float = 0.5) -> dist.MixtureSameFamily:
    """An equal-weight mixture of two Gaussians with means ±(separation / 2) · 1/√dim · (1, …, 1)."""
    mu = torch.full((dim,), separation / 2 / dim**0.5, dtype=torch.float64)
    locs = torch.stack([-mu, mu])  # (2, dim)
    components = dist.Normal(locs, torch.full_like(locs, scale)).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(torch.ones(2, dtype=torch.float64)), components)


class GaussianFit(PyroModule):
    """q(z) = N(loc, scale_tril scale_trilᵀ) as a guide for the site ``"z"``."""

    def __init__(self, init_loc: torch.Tensor) -> None:
        super().__init__()
        dim = init_loc.shape[-1]
        self.loc = PyroParam(init_loc.clone())
        self.scale_tril = PyroParam(torch.eye(dim, dtype=init_loc.dtype), constraint=constraints.lower_cholesky)

    def distribution(self) -> dist.MultivariateNormal:
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)

    def forward(self) -> torch.Tensor:
        return pyro.sample("z", self.distribution())


@dataclass
class Fit:
    name: str
    q: dist.MultivariateNormal
    reverse_kl: float  # Monte-Carlo KL(q ‖ p)
    forward_kl: float  # Monte-Carlo KL(p ‖ q)

    def summary(self) -> dict:
        return {
            "fit": self.name,
            "mean": self.q.loc.tolist(),
            "variance": self.q.covariance_matrix.diagonal().tolist(),
            "reverse_kl": self.reverse_kl,
            "forward_kl": self.forward_kl,
        }


@scoped
def fit_reverse_kl(target, steps: int = 2000, lr: float = 0.02, num_particles: int = 16, seed: int = 0):
    """argmin_q KL(q ‖ p) by SVI with Trace_ELBO, from a random start loc ~ N(0, I)."""
    pyro.set_rng_seed(seed)
    dim = target.event_shape[0]
    guide = GaussianFit(torch.randn(dim, dtype=torch.float64))

    def model() -> torch.Tensor:
        return pyro.sample("z", target)

    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    for _ in range(steps):
        svi.step()
    return guide.distribution()


@scoped
def fit_forward_kl(target, num_samples: int = 20000, steps: int = 2000, lr: float = 0.02, seed: int = 0):
    """argmin_q KL(p ‖ q) = argmax_q E_p[log q(z)]: maximum likelihood by Adam on ``num_samples`` draws of p."""
    pyro.set_rng_seed(seed)
    samples = target.sample((num_samples,))  # (S, dim)
    fit = GaussianFit(torch.zeros(target.event_shape[0], dtype=torch.float64))
    optim = torch.optim.Adam(fit.parameters(), lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        loss = -fit.distribution().log_prob(samples).mean()
        loss.backward()
        optim.step()
    return fit.distribution()


@torch.no_grad()
def kl_both_ways(target, q, num_samples: int = 100000) -> tuple[float, float]:
    """(KL(q ‖ p), KL(p ‖ q)) by Monte Carlo with ``num_samples`` draws each."""
    zq = q.sample((num_samples,))
    zp = target.sample((num_samples,))
    reverse = (q.log_prob(zq) - target.log_prob(zq)).mean()
    forward = (target.log_prob(zp) - q.log_prob(zp)).mean()
    return float(reverse), float(forward)


@scoped
def kl_directions_study(dim: int, steps: int = 2000, seed: int = 0) -> tuple[dist.MixtureSameFamily, list[Fit]]:
    """The target in ``dim`` dimensions and its reverse- and forward-KL Gaussian fits, each with both KLs."""
    target = bimodal_target(dim)
    fits = []
    for name, q in [
        (REVERSE, fit_reverse_kl(target, steps=steps, seed=seed)),
        (FORWARD, fit_forward_kl(target, steps=steps, seed=seed)),
    ]:
        q = dist.MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach())
        fits.append(Fit(name, q, *kl_both_ways(target, q)))
    return target, fits
