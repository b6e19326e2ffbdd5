"""Per-datapoint estimates that every number pyro_lvm prints comes from.

With z_k ~ q(z | x, c), k = 1..K, and log weights  log w_k = log p(x, z_k | c) - log q(z_k | x, c):
- ELBO(x)      = mean_k log w_k                       (a lower bound on log p(x | c))
- log p̂_K(x)   = logsumexp_k log w_k - log K         (IWAE; E[log p̂_K] rises to log p(x) as K grows)
Pyro's ``vectorized_importance_weights`` sums over the data plate; here every datapoint keeps its own value,
and the K particles are drawn in chunks so memory stays at batch * chunk * P floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine

from pyro_lvm.data.batches import in_order
from pyro_lvm.data.datasets import Split
from pyro_lvm.guides import log_joint_per_datapoint
from pyro_lvm.seeding import seeded


@dataclass
class Estimate:
    """Per-datapoint values with their mean and standard error over datapoints."""

    values: torch.Tensor  # (N,)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def stderr(self) -> float:
        n = self.values.numel()
        return float(self.values.std() / math.sqrt(n)) if n > 1 else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "stderr": self.stderr, "n": int(self.values.numel())}


def guide_distribution(guide, x, c=None, idx=None, num_data=None):
    """q(z | x, c) as the distribution at the guide's ``z`` site: batch shape (B,), event (D,)."""
    with poutine.block():
        trace = poutine.trace(guide).get_trace(x, c, idx=idx, num_data=num_data)
    return trace.nodes["z"]["fn"]


@torch.no_grad()
def log_weights(model, q, x, c, num_samples: int) -> torch.Tensor:
    """log w for ``num_samples`` draws of q (batch (B,)): returns (K, B)."""
    z = q.sample((num_samples,))  # (K, B, D)
    return log_joint_per_datapoint(model, x, c, z) - q.log_prob(z)


def batch_estimates(
    model, guide, x, c=None, idx=None, num_data=None, num_samples: int = 1000, chunk_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(IWAE log p̂_K(x), ELBO(x)), each (B,), from the same K particles of the guide's q drawn in chunks."""
    return estimates_from_q(model, guide_distribution(guide, x, c, idx, num_data), x, c, num_samples, chunk_size)


def estimates_from_q(model, q, x, c=None, num_samples: int = 1000, chunk_size: int = 1000):
    """(IWAE log p̂_K(x), ELBO(x)), each (B,), with q (batch (B,), event (D,)) as the proposal."""
    running_lse = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    done = 0
    while done < num_samples:
        k = min(chunk_size, num_samples - done)
        lw = log_weights(model, q, x, c, k)  # (k, B)
        running_lse = torch.logaddexp(running_lse, torch.logsumexp(lw, dim=0))
        total += lw.sum(0)
        done += k
    return running_lse - math.log(num_samples), total / num_samples


def prior_proposal(model, x: torch.Tensor, c: torch.Tensor | None = None):
    """The prior p(z | c) with batch shape (B,), as an importance proposal: log w = log p(x | z, c)."""
    return model.prior_dist(c).expand([x.shape[0]])


def evaluate_split(
    model,
    guide,
    split: Split,
    condition,
    num_samples: int,
    chunk_size: int,
    batch_size: int,
    num_points: int | None = None,
    num_data: int | None = None,
    seed: int = 1,
    proposal: Callable | None = None,
) -> dict:
    """IWAE log p̂(x) and ELBO for every row of ``split`` (or its first ``num_points``).

    ``num_data`` is passed for per-datapoint guides evaluated on the rows they were trained on (idx are rows).
    ``proposal(model, target, c)`` replaces the guide's q as the importance proposal (e.g. ``prior_proposal``).
    Evaluation draws from its own seeded RNG stream and leaves the training stream untouched.
    """
    iwae, elbo = [], []
    with seeded(seed), torch.no_grad():
        for batch in in_order(split.head(num_points), batch_size):
            target, c = condition(batch.x, batch.y)
            if proposal is None:
                q = guide_distribution(guide, target, c, batch.idx if num_data else None, num_data)
            else:
                q = proposal(model, target, c)
            lp, el = estimates_from_q(model, q, target, c, num_samples, chunk_size)
            iwae.append(lp)
            elbo.append(el)
    return {"log_px": Estimate(torch.cat(iwae)), "elbo": Estimate(torch.cat(elbo))}


@torch.no_grad()
def mean_elbo(
    model, guide, split: Split, condition, batch_size: int = 500, seed: int = 1, num_data: int | None = None
) -> float:
    """Single-particle ELBO per datapoint over a whole split (the validation curve)."""
    result = evaluate_split(
        model,
        guide,
        split,
        condition,
        num_samples=1,
        chunk_size=1,
        batch_size=batch_size,
        num_data=num_data,
        seed=seed,
    )
    return result["elbo"].mean


def independent_baseline(train_x: torch.Tensor, test_x: torch.Tensor, binary: bool) -> Estimate:
    """log-likelihood of a model with independent pixels fitted on ``train_x``: Bernoulli with Laplace-smoothed
    means for binary data, Gaussian with per-pixel mean and (floored) standard deviation otherwise."""
    if binary:
        p = (train_x.sum(0) + 1) / (train_x.shape[0] + 2)
        d = torch.distributions.Bernoulli(probs=p)
    else:
        d = torch.distributions.Normal(train_x.mean(0), train_x.std(0).clamp_min(1e-2))
    return Estimate(d.log_prob(test_x).sum(-1))


@torch.no_grad()
def active_units(guide, split: Split, condition, batch_size: int = 500, threshold: float = 0.01) -> int:
    """Burda et al. (2016): unit u is active if Var_x E_q[z_u | x] > threshold."""
    means = []
    for batch in in_order(split, batch_size):
        target, c = condition(batch.x, batch.y)
        means.append(guide_distribution(guide, target, c).mean)
    return int((torch.cat(means).var(0) > threshold).sum())
