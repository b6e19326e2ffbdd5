"""Test-time local inference: the best q(z) in a family for each datapoint under a frozen model, found by Adam on
the per-datapoint ELBO (Cremer et al. 2018). Families:

- ``gaussian``: q*(z) = N(mu, diag sigma²), free (mu, sigma) per row (``fit_local``).
- ``flow``: q*(z) = (T_K ∘ … ∘ T_1)#N(mu, diag sigma²) with free (mu, sigma) and a free context vector per row and
  K conditional autoregressive transforms (``pyro_lvm.guides.flow``) fitted to the rows of the block
  (``fit_local_flow``). The transforms' weights are shared by the block's rows, each row conditioning them on its
  own context: the flexibility of a per-row flow at the cost of one network. It starts at a given Gaussian (the
  transforms start as the identity), e.g. q*_Gaussian, or at a flow guide's own q (its transforms copied).

Rows are independent, so a batch of rows is optimised at once. Every ``window`` steps the window's mean ELBO is
compared with the best so far; on a plateau (improvement < ``tol``) torch's ReduceLROnPlateau divides the step size
by 10, and after ``num_decays`` such reductions the next plateau stops the run. The decays matter: Adam's iterate
jitters on the scale of its step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyro.distributions as dist
import torch
from torch import nn

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides import build_flows, flow_distribution, local_elbo, log_joint_per_datapoint


@dataclass
class LocalFit:
    loc: torch.Tensor  # (B, D)
    scale: torch.Tensor  # (B, D)
    steps: int
    converged: bool

    def distribution(self, rows: slice = slice(None)) -> dist.Distribution:
        return dist.Normal(self.loc[rows], self.scale[rows]).to_event(1)


@dataclass
class LocalFlowFit(LocalFit):
    context: torch.Tensor  # (B, C)
    flows: nn.ModuleList  # shared by the rows, frozen after the fit

    def distribution(self, rows: slice = slice(None)) -> dist.Distribution:
        return flow_distribution(self.loc[rows], self.scale[rows], self.context[rows], self.flows)


def _maximise(elbo: Callable[[], torch.Tensor], params, rows, lr, max_steps, window, tol, num_decays):
    """Adam on ``elbo()`` (summed over rows) with the plateau schedule of the module docstring: (steps, converged)."""
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.1, patience=0, threshold=tol, threshold_mode="abs"
    )
    running, step = 0.0, 0
    with torch.enable_grad():
        for step in range(1, max_steps + 1):
            value = elbo()
            grads = torch.autograd.grad(-value, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            running += value.item() / rows
            if step % window == 0:
                before = opt.param_groups[0]["lr"]
                plateau.step(running / window)
                running = 0.0
                if opt.param_groups[0]["lr"] < before * 0.5 and before < lr * 0.1 ** (num_decays - 0.5):
                    return step, True
    return step, False


def fit_local(
    model,
    x,
    c,
    init_loc: torch.Tensor,
    init_scale: torch.Tensor,
    lr: float = 0.01,
    max_steps: int = 3000,
    window: int = 100,
    tol: float = 0.01,
    num_samples: int = 10,
    num_decays: int = 2,
    family: Literal["gaussian", "flow"] = "gaussian",
    flow_options: dict | None = None,
) -> LocalFit:
    """Maximise ELBO(mu, sigma) = E_q[log p(x, z | c)] + H[q] for each row of x; the model's parameters only
    take part as constants (their gradients are not taken). ``family = "flow"`` fits the flow family instead,
    started at N(init_loc, init_scale²) (``fit_local_flow``; ``flow_options``: flows, kind, hidden, context_dim)."""
    if family == "flow":
        schedule = dict(lr=lr, max_steps=max_steps, window=window, tol=tol, num_samples=num_samples)
        return fit_local_flow(
            model, x, c, init_loc, init_scale, **(flow_options or {}), **schedule, num_decays=num_decays
        )
    if family != "gaussian":
        raise PyroLVMError(f"unknown local family {family!r}; use 'gaussian' or 'flow'")
    loc = init_loc.detach().clone().requires_grad_()
    log_scale = init_scale.detach().log().clone().requires_grad_()

    def elbo():
        return local_elbo(model, x, c, loc, log_scale.exp(), num_samples).sum()

    steps, converged = _maximise(elbo, [loc, log_scale], x.shape[0], lr, max_steps, window, tol, num_decays)
    return LocalFit(loc.detach(), log_scale.detach().exp(), steps, converged)


def fit_local_flow(
    model,
    x,
    c,
    init_loc: torch.Tensor,
    init_scale: torch.Tensor,
    flows: int = 2,
    kind: str = "affine",
    hidden: list[int] | None = None,
    context_dim: int = 16,
    lr: float = 0.01,
    max_steps: int = 3000,
    window: int = 100,
    tol: float = 0.01,
    num_samples: int = 10,
    num_decays: int = 2,
    init_flows: nn.ModuleList | None = None,
    init_context: torch.Tensor | None = None,
) -> LocalFlowFit:
    """Maximise ELBO = E_q[log p(x, z | c) − log q(z)] per row over the flow family of the module docstring.
    It starts at N(init_loc, init_scale²) warped by identity transforms, or, with ``init_flows`` and
    ``init_context`` (B, C), at a copy of those transforms with that context: a flow guide's own q for the rows,
    from which the fit moves each row's base and context and the block's copy of the transforms."""
    D = init_loc.shape[-1]
    if init_flows is not None:
        transforms = copy.deepcopy(init_flows).requires_grad_(True)
        context = init_context.detach().clone().requires_grad_()
    else:
        transforms = build_flows(D, context_dim, flows, kind, list(hidden or [64]))
        context = torch.randn(x.shape[0], context_dim, dtype=init_loc.dtype, device=init_loc.device).requires_grad_()
    transforms = transforms.to(init_loc.device, init_loc.dtype)
    loc = init_loc.detach().clone().requires_grad_()
    log_scale = init_scale.detach().log().clone().requires_grad_()

    def elbo():
        q = flow_distribution(loc, log_scale.exp(), context, transforms)
        z = q.rsample((num_samples,))  # (S, B, D)
        return (log_joint_per_datapoint(model, x, c, z) - q.log_prob(z)).mean(0).sum()

    params = [loc, log_scale, context, *transforms.parameters()]  # the model's are constants: no gradient taken
    steps, converged = _maximise(elbo, params, x.shape[0], lr, max_steps, window, tol, num_decays)
    transforms.requires_grad_(False)
    return LocalFlowFit(loc.detach(), log_scale.detach().exp(), steps, converged, context.detach(), transforms)
