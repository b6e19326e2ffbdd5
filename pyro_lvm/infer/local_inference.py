"""Test-time local inference: the best Gaussian q*(z) = N(mu, diag sigma²) for each datapoint under a frozen
model, found by Adam on the per-datapoint ELBO (Cremer et al. 2018). Rows are independent, so a batch of rows
is optimised at once. Every ``window`` steps the window's mean ELBO is compared with the best so far; on a plateau
(improvement < ``tol``) torch's ReduceLROnPlateau divides the step size by 10, and after ``num_decays`` such
reductions the next plateau stops the run. The decays matter: Adam's iterate jitters on the scale of its step."""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch

from pyro_lvm.guides import local_elbo


@dataclass
class LocalFit:
    loc: torch.Tensor  # (B, D)
    scale: torch.Tensor  # (B, D)
    steps: int
    converged: bool

    def distribution(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


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
) -> LocalFit:
    """Maximise ELBO(mu, sigma) = E_q[log p(x, z | c)] + H[q] for each row of x; the model's parameters only
    take part as constants (their gradients are not taken)."""
    loc = init_loc.detach().clone().requires_grad_()
    log_scale = init_scale.detach().log().clone().requires_grad_()
    opt = torch.optim.Adam([loc, log_scale], lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.1, patience=0, threshold=tol, threshold_mode="abs"
    )
    running, step, converged = 0.0, 0, False
    with torch.enable_grad():
        for step in range(1, max_steps + 1):
            elbo = local_elbo(model, x, c, loc, log_scale.exp(), num_samples).sum()
            loc.grad, log_scale.grad = torch.autograd.grad(-elbo, (loc, log_scale))
            opt.step()
            running += elbo.item() / x.shape[0]
            if step % window == 0:
                before = opt.param_groups[0]["lr"]
                plateau.step(running / window)
                running = 0.0
                if opt.param_groups[0]["lr"] < before * 0.5 and before < lr * 0.1 ** (num_decays - 0.5):
                    converged = True
                    break
    return LocalFit(loc.detach(), log_scale.detach().exp(), step, converged)
