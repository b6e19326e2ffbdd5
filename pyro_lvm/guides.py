"""Guides q(z | x, c), all with the model's signature ``forward(x, c=None, *, idx=None, num_data=None, beta=1.0)``.

- ``amortized``: an encoder predicts q(z|x,c) = N(mu(x,c), diag sigma(x,c)²).
- ``per_datapoint``: free (mu_n, sigma_n) for each of the N training rows, looked up by ``idx``. Rows live in
  sparse ``nn.Embedding`` tables stored unconstrained; only the batch's rows are read, transformed (softplus)
  and, with the row-wise optimiser of ``pyro_lvm.optim``, updated, so a step costs O(batch), not O(N).
- ``semi_amortized``: the encoder's (mu, sigma) start K gradient-ascent steps on the per-datapoint ELBO under the
  current model (Kim et al. 2018, SA-VAE); gradients flow through none, the first, or all refinement steps.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.models import broadcast_cat, data_plate
from pyro_lvm.nets import GaussianHead
from pyro_lvm.registry import Registry

GUIDES: Registry[PyroModule] = Registry("guide")

MIN_SCALE = 1e-4
REFINE_MAX_STEP = 1.0  # the largest move of one row's (mu, log sigma) in one refinement step
REFINE_SAMPLES = 4  # reparameterised samples per refinement gradient


def _sample_z(loc: torch.Tensor, scale: torch.Tensor, beta: float) -> torch.Tensor:
    with poutine.scale(scale=beta):
        return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


@GUIDES.register("amortized")
class AmortizedGuide(PyroModule):
    def __init__(
        self,
        num_features: int,
        latent_dim: int,
        cond_dim: int = 0,
        hidden: list[int] | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        self.encoder = GaussianHead(num_features + cond_dim, list(hidden or [128, 128]), latent_dim)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(broadcast_cat(x, c))  # (B, D), (B, D)

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0):
        with data_plate(x, idx, num_data):
            loc, scale = self.encode(x, c)
            return _sample_z(loc, scale, beta)


def inverse_softplus(y: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(y))))


@GUIDES.register("per_datapoint")
class PerDatapointGuide(PyroModule):
    """q(z_n) = N(mu_n, diag softplus(rho_n)²) for n = 1..N; mu and rho are (N, D) sparse embedding tables."""

    def __init__(self, num_data: int, latent_dim: int, init_scale: float = 1.0, **_: object) -> None:
        super().__init__()
        self.num_data = num_data
        self.loc = nn.Embedding(num_data, latent_dim, sparse=True)
        self.raw_scale = nn.Embedding(num_data, latent_dim, sparse=True)
        with torch.no_grad():
            self.loc.weight.zero_()
            self.raw_scale.weight.fill_(inverse_softplus(init_scale))

    def local_params(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(idx), F.softplus(self.raw_scale(idx)) + MIN_SCALE  # (B, D) each

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0):
        if idx is None:
            raise PyroLVMError("the per_datapoint guide needs dataset indices: call it with idx=batch.idx")
        if num_data is not None and num_data != self.num_data:
            raise PyroLVMError(
                f"the per_datapoint guide holds {self.num_data} rows but num_data={num_data}; "
                "build it for the dataset it is trained on"
            )
        if idx.numel() and int(idx.max()) >= self.num_data:
            raise PyroLVMError(
                f"index {int(idx.max())} is out of range for a per_datapoint guide of {self.num_data} rows; "
                "its dataset does not match the one it was built for"
            )
        with data_plate(x, idx, num_data):
            loc, scale = self.local_params(idx)
            return _sample_z(loc, scale, beta)


@GUIDES.register("semi_amortized")
class SemiAmortizedGuide(AmortizedGuide):
    """Encoder start, then K steps of gradient ascent on ELBO(mu, sigma) = E_q[log p(x, z | c)] + H[q]."""

    def __init__(
        self,
        num_features: int,
        latent_dim: int,
        cond_dim: int = 0,
        hidden: list[int] | None = None,
        refine_steps: int = 5,
        refine_lr: float = 0.1,
        refine_backprop: str = "first",
        **_: object,
    ) -> None:
        super().__init__(num_features, latent_dim, cond_dim, hidden)
        self.refine_steps = refine_steps
        self.refine_lr = refine_lr
        self.refine_backprop = refine_backprop
        self.model: PyroModule | None = None  # set by ``attach``: refinement needs log p(x, z)

    def attach(self, model: PyroModule) -> None:
        # Stored outside the module tree so the model's parameters are not counted twice as the guide's.
        object.__setattr__(self, "model", model)

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0):
        loc, scale = self.encode(x, c)
        if self.model is None:
            raise PyroLVMError("semi_amortized guide has no model to refine against; call guide.attach(model)")
        loc, scale = refine(self.model, x, c, loc, scale, self.refine_steps, self.refine_lr, self.refine_backprop)
        with data_plate(x, idx, num_data):
            return _sample_z(loc, scale, beta)


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
            elif not loc.requires_grad:  # encoder output under no_grad (evaluation)
                loc, log_scale = loc.requires_grad_(), log_scale.requires_grad_()
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


def build_guide(cfg, num_features: int, cond_dim: int, num_data: int, model: PyroModule) -> PyroModule:
    guide = GUIDES.build(
        cfg.guide.name,
        num_features=num_features,
        latent_dim=cfg.model.latent_dim,
        cond_dim=cond_dim,
        hidden=cfg.guide.hidden,
        num_data=num_data,
        init_scale=cfg.guide.init_scale,
        refine_steps=cfg.guide.refine_steps,
        refine_lr=cfg.guide.refine_lr,
        refine_backprop=cfg.guide.refine_backprop,
    )
    if hasattr(guide, "attach"):
        guide.attach(model)
    if hasattr(model.prior, "attach_encoder"):
        if not hasattr(guide, "encode"):
            raise PyroLVMError(
                f"prior 'vamp' pushes pseudo-inputs through an encoder, and guide {cfg.guide.name!r} has none; "
                "use guide.name = 'amortized' or 'semi_amortized'"
            )
        model.prior.attach_encoder(guide.encode)
    return guide
