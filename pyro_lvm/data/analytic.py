"""The linear-Gaussian latent variable model, whose evidence and posterior are exact:

    z ~ N(0, I_D),   x | z ~ N(W z + b, s² I_P)
    p(x)   = N(x; b, W Wᵀ + s² I)
    p(z|x) = N(z; Σ Wᵀ (x − b) / s², Σ),   Σ = (I + Wᵀ W / s²)⁻¹

Tests and the ELBO-identity experiment compare every estimator of the library against these formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import MultivariateNormal


@dataclass
class LinearGaussian:
    W: torch.Tensor  # (P, D)
    b: torch.Tensor  # (P,)
    s: float

    @classmethod
    def random(cls, latent_dim: int, obs_dim: int, seed: int = 0, s: float = 0.5, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(obs_dim, latent_dim, generator=g, dtype=dtype)
        b = torch.randn(obs_dim, generator=g, dtype=dtype)
        return cls(W, b, s)

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def marginal(self) -> MultivariateNormal:
        P = self.W.shape[0]
        cov = self.W @ self.W.T + self.s**2 * torch.eye(P, dtype=self.W.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (N,)."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact p(z|x): loc (N, D) and covariance (D, D), shared by all x."""
        D = self.latent_dim
        precision = torch.eye(D, dtype=self.W.dtype) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / self.s**2  # (N, D)
        return loc, cov

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g, dtype=self.W.dtype)
        eps = torch.randn(n, self.W.shape[0], generator=g, dtype=self.W.dtype)
        return z @ self.W.T + self.b + self.s * eps
