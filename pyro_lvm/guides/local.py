"""Local (per-datapoint) pieces every guide shares: the ``z`` site, the per-datapoint ELBO of a Gaussian q under the
model, and the refinement steps of the semi-amortized guide and of test-time inference."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule

from pyro_lvm.errors import PyroLVMError

MIN_SCALE = 1e-4
REFINE_MAX_STEP = 1.0  # the largest move of one row's (mu, log sigma) in one refinement step
REFINE_SAMPLES = 4  # reparameterised samples per refinement gradient


def needs_x(x: torch.Tensor | None) -> None:
    """An encoder reads x: refuse ``x = None`` (prior predictive needs no guide; posterior predictive keeps x and
    passes ``observe=False`` to the model)."""
    if x is None:
        raise PyroLVMError(
            "this guide encodes x and was called with x=None; for posterior predictive draws pass x with observe=False"
        )


def sample_z(loc: torch.Tensor, scale: torch.Tensor, beta: float) -> torch.Tensor:
    """The guide's ``z`` site, q(z) = N(loc, diag scale²), scaled by beta (KL annealing) like the model's."""
    with poutine.scale(scale=beta):
        return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def local_elbo(
    model: PyroModule,
    x: torch.Tensor,
    c: torch.Tensor | None,
    loc: torch.Tensor,
    scale: torch.Tensor,
    num_samples: int = 1,
    flat: bool = False,
) -> torch.Tensor:
    """Per-datapoint reparameterised ELBO of q = N(loc, diag scale²): mean_s log p(x, z_s | c) + H[q], (B,).

    The model's log joint is read from a trace with z conditioned on the samples; the Gaussian entropy is exact.
    ``flat``: see ``log_joint_per_datapoint``.
    """
    eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps  # (S, B, D)
    log_joint = log_joint_per_datapoint(model, x, c, z, flat)  # (S, B)
    entropy = dist.Normal(loc, scale).entropy().sum(-1)  # (B,)
    return log_joint.mean(0) + entropy


def _sum_log_probs(trace) -> torch.Tensor:
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["fn"].log_prob(site["value"])
    return total


def log_joint_per_datapoint(model: PyroModule, x, c, z: torch.Tensor, flat: bool = False) -> torch.Tensor:
    """log p(x, z | c) for z of shape (S, B, D): returns (S, B), unscaled by any subsampling.

    By default the S samples get a plate at dim -2. ``flat`` folds them into the batch instead ((S·B) rows, x and c
    repeated): for callers inside an ELBO's vectorised-particle plate, which holds dim -2 (the semi-amortized
    guide's refinement under ``elbo.num_particles > 1``)."""
    if flat:
        S, B = z.shape[:2]

        def fold(t):
            return None if t is None else t.expand(S, *t.shape).reshape(S * B, *t.shape[1:])

        with poutine.block():
            trace = poutine.trace(poutine.condition(model, data={"z": z.reshape(S * B, z.shape[-1])})).get_trace(
                fold(x), fold(c)
            )
        return _sum_log_probs(trace).reshape(S, B)
    with poutine.block(), pyro.plate("particles", z.shape[0], dim=-2):
        trace = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x, c)
    return _sum_log_probs(trace)


def refine(model, x, c, loc, scale, steps: int, lr: float, backprop: str):
    """K steps of gradient ascent on the local ELBO in (loc, log scale).

    backprop = "all": every step stays in the graph (the encoder and decoder learn through them, as in SA-VAE);
    "first": the first step stays in the graph and later steps are added as a constant shift, so gradients see
    d(step 1)/d(encoder) (a cheap first-order approximation); "none": the refined values are constants, and the
    encoder then gets no gradient from the ELBO at all (train it separately, or use it for evaluation only).
    """
    with torch.enable_grad():
        log_scale = scale.log()
        anchor = None  # (loc, log_scale) after the first step, graph kept, for backprop = "first"
        for k in range(steps):
            keep_graph = backprop == "all" or (backprop == "first" and k == 0)
            if not keep_graph:
                loc, log_scale = loc.detach().requires_grad_(), log_scale.detach().requires_grad_()
            elif not loc.requires_grad:  # encoder output under no_grad (evaluation): fresh leaves, so the
                # caller's tensors are left as they were (requires_grad_ would flag them in place)
                loc, log_scale = loc.detach().requires_grad_(), log_scale.detach().requires_grad_()
            elbo = local_elbo(model, x, c, loc, log_scale.exp(), REFINE_SAMPLES, flat=True).sum()
            g_loc, g_log_scale = torch.autograd.grad(elbo, (loc, log_scale), create_graph=keep_graph)
            # Natural-gradient step: the Fisher information of N(mu, sigma²) is 1/sigma² for mu and 2 for
            # log sigma, so the step is (sigma² g_mu, g_log_sigma / 2): invariant to the posterior's scale, which
            # a plain step of fixed size is not (it overshoots sharp dimensions by orders of magnitude).
            step_loc, step_log_scale = log_scale.exp() ** 2 * g_loc, 0.5 * g_log_scale
            # Per-datapoint clipping (as Kim et al. 2018 clip gradients): no row moves far in one step.
            norm = torch.cat([step_loc, step_log_scale], -1).norm(dim=-1, keepdim=True)  # (B, 1)
            shrink = (REFINE_MAX_STEP / (lr * norm).clamp_min(1e-12)).clamp(max=1.0)
            loc = loc + lr * shrink * step_loc
            log_scale = (log_scale + lr * shrink * step_log_scale).clamp(math.log(MIN_SCALE), 5.0)
            if k == 0:
                anchor = (loc, log_scale)
    if backprop == "first" and anchor is not None:
        loc = anchor[0] + (loc - anchor[0]).detach()
        log_scale = anchor[1] + (log_scale - anchor[1]).detach()
    elif backprop == "none":
        loc, log_scale = loc.detach(), log_scale.detach()
    return loc, log_scale.exp()
