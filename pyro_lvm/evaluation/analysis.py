"""After training: encode points, reconstruct them, walk the latent space, and draw predictive data, for every guide.

All take an ``Experiment`` (``pyro_lvm.Experiment.from_config``, ``pyro_lvm.load``) and the model's target ``x``
(B, P) with its condition ``c`` (B, C) for a CVAE. ``encode`` gives q(z | x, c):

- amortized guides (``amortized``, ``semi_amortized``, ``amortized_flow``, ``m2``): the guide's q for any x;
- ``per_datapoint``: the table's rows by dataset index (``idx``: rows of the training split), and for new points
  q* = argmax_q ELBO(q) over diagonal Gaussians under the frozen model (``pyro_lvm.evaluation.local_inference``),
  started at the prior N(0, I).

Everything random draws from its own seeded stream (``seed``): the caller's RNG state is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from pyro import poutine
from pyro.infer import Predictive

from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import guide_distribution
from pyro_lvm.evaluation.local_inference import fit_local
from pyro_lvm.models.vae import broadcast_cat
from pyro_lvm.seeding import seeded

if TYPE_CHECKING:  # the layer above, for the annotations only
    from pyro_lvm.training.experiment import Experiment


@dataclass
class Encoding:
    """q(z | x) per row: ``mean`` E_q[z] and ``scale`` the per-dimension standard deviation (B, D) (exact for
    Gaussians, from ``num_samples`` draws for flows), ``samples`` (S, B, D) when asked for."""

    mean: torch.Tensor
    scale: torch.Tensor
    samples: torch.Tensor | None = None
    converged: bool | None = None  # per-datapoint guide on new points: did the q* fit converge


def points(exp: Experiment, x: torch.Tensor | None, c: torch.Tensor | None, idx: torch.Tensor | None) -> tuple:
    """(x, c, idx): the given points, or with only ``idx`` the training rows it names (target and condition)."""
    if idx is None:
        if x is None:
            raise PyroLVMError("give the points x, or idx (rows of the training split)")
        return x, c, None
    n = len(exp.data.train)
    idx = torch.as_tensor(idx, device=exp.device).reshape(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise PyroLVMError(f"idx holds rows outside 0..{n - 1} (the training split); pass x for other points")
    if x is None:
        x, c_rows = exp.condition(exp.data.train.x[idx], exp.data.train.y[idx])
        c = c_rows if c is None else c
    return x, c, idx


@torch.no_grad()
@scoped
def encode(
    exp: Experiment,
    x: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    *,
    idx: torch.Tensor | None = None,
    num_samples: int = 0,
    seed: int = 0,
    fit_steps: int = 3000,
) -> Encoding:
    """q(z | x, c) of each row: mean, scale and (``num_samples`` > 0) draws z_s ~ q, (S, B, D).

    The per-datapoint guide reads its rows by ``idx`` (training rows); without ``idx`` it fits q* to x (at most
    ``fit_steps`` Adam steps; ``Encoding.converged`` says whether the plateau rule stopped it)."""
    x, c, idx = points(exp, x, c, idx)
    converged = None
    with seeded(seed):
        if exp.amortized:
            q = guide_distribution(exp.guide, x, c)
        elif idx is not None:
            q = guide_distribution(exp.guide, x, c, idx, len(exp.data.train))
        else:
            D = getattr(exp.model, "latent_dim", exp.cfg.model.latent_dim)
            zeros = torch.zeros(x.shape[0], D, dtype=x.dtype, device=x.device)
            fit = fit_local(exp.model, x, c, zeros, torch.ones_like(zeros), max_steps=fit_steps)
            q, converged = fit.distribution(), fit.converged
        try:
            mean, scale = q.mean, q.variance.sqrt()
        except NotImplementedError:  # flows: moments from draws
            draws = q.sample((max(num_samples, 256),))
            mean, scale = draws.mean(0), draws.std(0)
        samples = q.sample((num_samples,)) if num_samples > 0 else None
    return Encoding(mean, scale, samples, converged)


def _decode(exp, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return exp.model.decode_mean(z, c)


@torch.no_grad()
@scoped
def reconstruct(
    exp: Experiment,
    x: torch.Tensor | None = None,
    c: torch.Tensor | None = None,
    *,
    idx: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """E[x | z = E_q[z | x, c], c], (B, P): the decoder's mean at each row's posterior mean."""
    x, c, idx = points(exp, x, c, idx)
    return _decode(exp, encode(exp, x, c, idx=idx, seed=seed).mean, c)


@torch.no_grad()
@scoped
def interpolate(
    exp: Experiment,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    steps: int = 8,
    c: torch.Tensor | None = None,
    *,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z_t = (1 − t) E_q[z | x_a] + t E_q[z | x_b] for ``steps`` evenly spaced t in [0, 1] and their decoded means:
    ((steps, D), (steps, P)). ``x_a``, ``x_b`` are single rows (P,) or (1, P); ``c`` (1, C) for both."""
    if steps < 2:
        raise PyroLVMError(f"steps must be at least 2 (both ends), got {steps}")
    ends = encode(exp, torch.stack([x_a.reshape(-1), x_b.reshape(-1)]), _two(c), seed=seed).mean  # (2, D)
    t = torch.linspace(0, 1, steps, dtype=ends.dtype, device=ends.device).unsqueeze(-1)  # (steps, 1)
    z = (1 - t) * ends[0] + t * ends[1]
    return z, _decode(exp, z, None if c is None else c.reshape(1, -1).expand(steps, -1))


def _two(c):
    return None if c is None else c.reshape(1, -1).expand(2, -1)


@torch.no_grad()
@scoped
def traverse(
    exp: Experiment,
    x: torch.Tensor,
    dim: int,
    values: Sequence[float] | torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E_q[z | x] with latent ``dim`` set to each of ``values`` in turn, and the decoded means: ((V, D), (V, P))."""
    base = encode(exp, x.reshape(1, -1), None if c is None else c.reshape(1, -1), seed=seed).mean[0]  # (D,)
    if not 0 <= dim < base.shape[0]:
        raise PyroLVMError(f"dim {dim} is not a latent dimension (0..{base.shape[0] - 1})")
    values = torch.as_tensor(values, dtype=base.dtype, device=base.device).reshape(-1)  # (V,)
    z = base.expand(len(values), -1).clone()
    z[:, dim] = values
    return z, _decode(exp, z, None if c is None else c.reshape(1, -1).expand(len(values), -1))


@torch.no_grad()
@scoped
def posterior_predictive(
    exp: Experiment,
    x: torch.Tensor | None = None,
    num_samples: int = 100,
    c: torch.Tensor | None = None,
    *,
    idx: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """x̃_s ~ p(x | z_s, c) with z_s ~ q(z | x, c): (S, B, P), drawn by ``pyro.infer.Predictive`` at the model's
    site ``"x"``."""
    if num_samples < 1:
        raise PyroLVMError(f"num_samples must be at least 1, got {num_samples}")
    x, c, idx = points(exp, x, c, idx)
    z = encode(exp, x, c, idx=idx, num_samples=num_samples, seed=seed).samples  # (S, B, D)
    with seeded(seed + 1):
        # uncondition: "x" drawn, not observed, for any model of the shared signature (a user's own too)
        model = poutine.uncondition(exp.model)
        return Predictive(model, posterior_samples={"z": z}, return_sites=["x"], parallel=True)(x, c)["x"]


@torch.no_grad()
@scoped
def prior_draws(
    exp: Experiment, num: int, c: torch.Tensor | None = None, what: str = "mean", seed: int | None = None
) -> torch.Tensor:
    """``num`` draws of the prior predictive: "latents" z ~ p(z | c) (num, D), "mean" E[x | z, c] (num, P) or
    "draws" x ~ p(x | z, c) (num, P). ``seed=None`` draws from the caller's stream (as ``pyro_lvm.sample`` did)."""
    if what not in ("mean", "draws", "latents"):
        raise PyroLVMError(f"return_={what!r} is not one of 'mean', 'draws', 'latents'")
    model = exp.model
    with seeded(seed) if seed is not None else nullcontext():
        # z as ``model.generate`` draws it (x held at a dummy), so "mean" repeats ``pyro_lvm.sample``'s draws
        weight = next(model.decoder.parameters())
        dummy = weight.new_zeros(num, model.num_features or model.decoder[-1].out_features)
        z = Predictive(model, num_samples=1, return_sites=["z"])(dummy, c)["z"][0]  # (num, D)
        if what == "draws":
            return model.likelihood(model.decoder(broadcast_cat(z, c))).sample()  # the site "x"'s distribution
    return z if what == "latents" else _decode(exp, z, c)
