"""ArviZ bridge: guide samples as ArviZ posteriors, PSIS k̂ of each guide as an importance proposal, and NUTS
reference posteriors p(z | x) under a trained decoder.

- Posteriors are whatever the installed ArviZ uses (``pyro_lvm.evaluation._arviz.Posterior``): ``az.InferenceData`` on ArviZ
  0.x, ``xarray.DataTree`` on 1.x. Either way ``obj.posterior["z"]`` has dims (chain, draw, point, latent).

- PSIS k̂ (Yao et al. 2018, "Yes, but did it work?"): fit a generalised Pareto tail to the importance weights
  w_k = p(x, z_k) / q(z_k | x), z_k ~ q. k̂ < 0.5: the IWAE estimate is reliable; 0.5–0.7: usable but slow to
  converge; k̂ > 0.7: q misses mass of p(z | x) and log p̂(x) cannot be trusted at any practical K.
  Computed with ArviZ's PSIS (``az.psislw`` on 0.x, ``arviz_stats``' ``psislw`` on 1.x), per datapoint. The tail
  is the largest S/5 of the S draws (3 sqrt(S) past S = 225), and a fit needs 6 of them on both ArviZ lines: fewer
  than ``MIN_PSIS_DRAWS`` = 30 draws is refused with a ``PyroLVMError`` naming that minimum, never a k̂ of nothing.
- NUTS: ``pyro.infer.MCMC`` on the model's own ``z`` site with ``x`` observed and the decoder frozen; chains run
  one after another with their own seeds and dispersed starts (Pyro's init_to_uniform), so ArviZ's R-hat and ESS
  say whether they agree. ArviZ's ``from_pyro`` only reads a single MCMC object (and is gone in 1.x), so we build
  the posterior with ``from_dict``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from pyro_lvm.evaluation import _arviz
from pyro_lvm.evaluation._arviz import Posterior, az
from pyro_lvm.evaluation.estimates import guide_distribution, log_weights, prior_proposal
from pyro_lvm.seeding import seeded

DIMS = {"z": ["point", "latent"]}
MIN_PSIS_DRAWS = _arviz.MIN_PSIS_DRAWS  # the fewest importance samples per row whose k̂ both ArviZ lines fit


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def samples_to_inference_data(z: torch.Tensor) -> Posterior:
    """``z`` (chains, draws, B, D) -> posterior variable ``z`` over dims (chain, draw, point, latent), as
    InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x)."""
    return _arviz.posterior_from_dict({"z": _to_numpy(z)}, DIMS)


@torch.no_grad()
def guide_inference_data(guide, x, c=None, idx=None, num_data=None, num_samples: int = 1000) -> Posterior:
    """Draws of q(z | x, c) for the rows of ``x``, as one chain (InferenceData on ArviZ 0.x, DataTree on 1.x)."""
    q = guide_distribution(guide, x, c, idx, num_data)
    return samples_to_inference_data(q.sample((num_samples,))[None])  # (1, S, B, D)


def psis_khat(log_w: torch.Tensor) -> np.ndarray:
    """Pareto k̂ per datapoint from log weights ``log_w`` (K, B) -> (B,): the shape k of a generalised Pareto fit
    to the largest of the K weights w_k = exp(log_w_k); the weights have finite moments of order < 1/k.
    K < ``MIN_PSIS_DRAWS`` (30) is a ``PyroLVMError``; a row with an infinite weight, or whose largest weights are
    all equal, gets k̂ = inf, on ArviZ 0.x and 1.x alike."""
    return _arviz.psis_khat(_to_numpy(log_w.T))  # (B, K): samples last


def guide_khat(model, guide, x, c=None, idx=None, num_data=None, num_samples: int = 2000) -> np.ndarray:
    """PSIS k̂ of the guide's q(z | x, c) used as the importance proposal for p(z | x, c), per datapoint."""
    q = guide_distribution(guide, x, c, idx, num_data)
    return psis_khat(log_weights(model, q, x, c, num_samples))


def prior_khat(model, x, c=None, num_samples: int = 2000) -> np.ndarray:
    """k̂ of the prior p(z | c) as the proposal: the reference a guide has to beat."""
    return psis_khat(log_weights(model, prior_proposal(model, x, c), x, c, num_samples))


@contextmanager
def frozen(module: torch.nn.Module):
    """Parameters without gradients for the duration (NUTS differentiates with respect to z only)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def nuts_reference(
    model, x, c=None, num_chains: int = 4, num_samples: int = 1000, warmup_steps: int = 500, seed: int = 0
) -> Posterior:
    """Reference draws of p(z | x, c) for the rows of ``x`` (all rows in one NUTS state of size B * D), from
    ``num_chains`` chains run in turn. The model's ``x`` site is observed; its parameters are constants.
    Returns InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x), ``posterior["z"]`` of shape (C, S, B, D)."""
    chains = []
    with frozen(model), seeded():
        for chain in range(num_chains):
            pyro.set_rng_seed(seed + chain)
            mcmc = MCMC(
                NUTS(model, max_plate_nesting=1),
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                disable_progbar=True,
            )
            mcmc.run(x, c)
            chains.append(mcmc.get_samples()["z"])  # (S, B, D)
    return samples_to_inference_data(torch.stack(chains))  # (C, S, B, D)


def convergence(idata: Posterior) -> dict[str, np.ndarray]:
    """Worst rank-normalised R-hat and smallest bulk ESS per datapoint, over its latent dimensions (ArviZ's own
    ``rhat`` and ``ess``, which take InferenceData on 0.x and DataTree on 1.x)."""
    rhat = az.rhat(idata)["z"].values  # (B, D)
    ess = az.ess(idata, method="bulk")["z"].values  # (B, D)
    return {"rhat": rhat.max(-1), "ess_bulk": ess.min(-1)}
