"""A vectorised Hamiltonian Monte Carlo transition over (chains, batch, latent) tensors, for annealed importance
sampling (``ais.py``): every (chain, datapoint) pair is its own Markov chain with its own accept/reject, and one
call of the log-density (a decoder pass over C x B rows) moves all of them.

Target f(z) per row, preconditioned by a fixed per-datapoint scale s (B, D) (a diagonal mass matrix M = diag(1/s²)):
with the scaled momentum r ~ N(0, I) and kinetic energy |r|²/2, the leapfrog step of size ε is

    r ← r + (ε/2) s ⊙ ∇log f(z);   z ← z + ε s ⊙ r;   r ← r + (ε/2) s ⊙ ∇log f(z)      (L times)

and the proposal (z', r') is accepted with probability min(1, exp(H(z, r) − H(z', r'))), H = −log f + |r|²/2.
Leapfrog is volume-preserving and reversible (with r negated), so the transition leaves f invariant for any fixed
ε, s and L (Neal 2011, "MCMC using Hamiltonian dynamics"); ``tests/test_ais.py`` checks it on Gaussians.

Why not Pyro's ``HMC`` kernel: it runs one chain of one joint density, with one accept/reject for the whole state.
AIS needs C x B independent chains (a joint accept/reject over all of them would almost never accept), so Pyro's
kernel would run once per (chain, datapoint) with its Python per step: 43 against 11,800 chain·steps per second at
digits size on 2 CPU cores (benchmarks/ais_speed.py, benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# z (C, B, D) -> (log q(z), log p(x, z)), each (C, B): the two ends of the annealing path
Parts = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class State:
    """Chains' positions and what the annealing needs at them: the two log-densities of the geometric path
    f_β = q^(1-β) p(x, ·)^β (``log_q``, ``log_p``, each (C, B)) and their gradients (C, B, D)."""

    z: torch.Tensor  # (C, B, D)
    log_q: torch.Tensor  # (C, B)
    log_p: torch.Tensor  # (C, B)
    grad_q: torch.Tensor  # (C, B, D)
    grad_p: torch.Tensor  # (C, B, D)

    def log_f(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.log_q + beta * self.log_p

    def grad_f(self, beta: float) -> torch.Tensor:
        return (1 - beta) * self.grad_q + beta * self.grad_p


def state_at(parts: Parts, z: torch.Tensor) -> State:
    """The state at z: ``parts(z)`` gives (log q(z), log p(x, z)), each (C, B); their gradients in z by autograd
    (only z's: the model's parameters are constants here)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        log_q, log_p = parts(z)
        (grad_q,) = torch.autograd.grad(log_q.sum(), z, retain_graph=True)
        (grad_p,) = torch.autograd.grad(log_p.sum(), z)
    return State(z.detach(), log_q.detach(), log_p.detach(), grad_q, grad_p)


def hmc_transition(
    parts: Parts,
    state: State,
    beta: float,
    step_size: torch.Tensor,
    scale: torch.Tensor,
    num_leapfrog: int,
    momentum: torch.Tensor | None = None,
) -> tuple[State, torch.Tensor]:
    """One HMC transition of every (chain, datapoint) row targeting f_β (module docstring). ``step_size`` (B,) per
    datapoint, ``scale`` (B, D); ``momentum`` (C, B, D) replaces the N(0, I) draw (tests). Returns the new state
    and each row's acceptance probability (C, B)."""
    eps = step_size[:, None]  # (B, 1)
    r0 = torch.randn_like(state.z) if momentum is None else momentum  # (C, B, D)
    r = r0 + 0.5 * eps * scale * state.grad_f(beta)
    new = state
    for i in range(num_leapfrog):
        new = state_at(parts, new.z + eps * scale * r)
        r = r + (eps if i < num_leapfrog - 1 else 0.5 * eps) * scale * new.grad_f(beta)
    h0 = -state.log_f(beta) + 0.5 * (r0**2).sum(-1)
    h1 = -new.log_f(beta) + 0.5 * (r**2).sum(-1)
    accept_prob = torch.exp(torch.clamp(h0 - h1, max=0.0)).nan_to_num(0.0)  # (C, B); a NaN energy rejects
    accept = torch.rand_like(accept_prob) < accept_prob
    keep = accept[..., None]

    def pick(a, b):
        return torch.where(keep if a.dim() == 3 else accept, a, b)

    out = State(*(pick(getattr(new, f), getattr(state, f)) for f in ("z", "log_q", "log_p", "grad_q", "grad_p")))
    return out, accept_prob


def adapt_step_size(
    step_size: torch.Tensor, accept_prob: torch.Tensor, target: float, low: float = 1e-4, high: float = 2.0
) -> torch.Tensor:
    """ε per datapoint (B,) × 1.02 where the mean acceptance over its chains was above ``target``, × 0.98 below,
    clamped to [low, high] (the rule of Wu et al. 2017's AIS code, per datapoint)."""
    up = accept_prob.mean(0) > target  # (B,)
    return (step_size * torch.where(up, 1.02, 0.98)).clamp(low, high)
