"""Optimisers: one torch optimiser over the dense parameters, and a row-wise one for sparse local tables.

Pyro's ``pyro.optim`` makes one torch optimiser per parameter tensor and, for a per-datapoint table, sweeps all
N rows every step (pyro-ppl/pyro#2386). Here dense parameters get one ``torch.optim.Adam``; the per-datapoint
``nn.Embedding(sparse=True)`` tables get ``RowAdam``: a row's moments *and its step count* are updated only when
the row is in the batch, so each row follows exactly the Adam trajectory of its own gradient sequence, untouched
rows stay bit-identical, and a step costs O(batch). ``torch.optim.SparseAdam`` is not that: it bias-corrects with
the table's global step, so a row seen every 21 steps moved up to 3.6x lr per appearance (tests/test_optim.py).
Runs record which optimiser was used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import nn

from pyro_lvm.registry import OPTIMS, Options


def _sparse_params(modules: list[nn.Module]) -> set[int]:
    ids = set()
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding) and sub.sparse:
                ids.add(id(sub.weight))
    return ids


class RowAdam(torch.optim.Optimizer):
    """Adam for tables whose gradients are sparse rows, with one step counter per row (N integers).

    For every row r in the batch, with its gradient g_r and its own count t_r of updates so far:

        t_r ← t_r + 1
        m_r ← β1 m_r + (1 − β1) g_r,          v_r ← β2 v_r + (1 − β2) g_r²
        θ_r ← θ_r − lr / (1 − β1^t_r) · m_r / (√v_r / √(1 − β2^t_r) + ε)

    which is ``torch.optim.Adam``'s arithmetic (same operations, same order) applied to that row alone. Rows not in
    the batch are not read or written. The state (moments and counts) is in ``state_dict``: resume is exact.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - see the class docstring
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, g = self._rows(p)  # (R,), (R, D)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                t = state["step"][rows] + 1
                state["step"][rows] = t
                m = state["exp_avg"][rows].lerp_(g, 1 - beta1)
                v = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["exp_avg"][rows], state["exp_avg_sq"][rows] = m, v
                # torch.optim.Adam computes the corrections in double (Python floats) and applies them as scalars
                t = t.to(torch.float64).reshape(-1, *[1] * (g.dim() - 1))  # (R, 1, ...)
                step_size = (lr / (1 - beta1**t)).to(p.dtype)
                bc2_sqrt = ((1 - beta2**t) ** 0.5).to(p.dtype)
                denom = (v.sqrt() / bc2_sqrt).add_(eps)
                p[rows] = p[rows] + (-step_size * m) / denom  # addcdiv(p, m, denom, value=-step_size)
        return None

    def _rows(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not p.grad.is_sparse:
            raise RuntimeError("RowAdam takes sparse row gradients (nn.Embedding(sparse=True))")
        grad = p.grad.coalesce()  # duplicate rows summed, as a dense gradient would have them
        return grad.indices()[0], grad.values()


class LazyAdam(RowAdam):
    """``RowAdam`` that also takes dense gradients, as every row seen (for a tensor of one or more dims; its first
    dim counts as the rows): on a dense tensor it is ``torch.optim.Adam``'s arithmetic, on a sparse table RowAdam's.
    One torch optimiser for every parameter of a model and a per-datapoint guide, e.g. over
    ``pyro.infer.Trace_ELBO()(model, guide).parameters()``; ``row_adam`` wraps it for ``pyro.infer.SVI``."""

    def _rows(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if p.grad.is_sparse:
            return super()._rows(p)
        if p.dim() == 0:
            raise RuntimeError("LazyAdam updates tensors of one or more dims; use torch.optim.Adam for scalars")
        return torch.arange(p.shape[0], device=p.device), p.grad


def row_adam(optim_args: dict | Callable[[str, torch.Tensor], dict]) -> Any:
    """A ``pyro.optim`` optimiser for ``pyro.infer.SVI`` that trains every built-in guide, the per-datapoint one
    included: ``LazyAdam`` per parameter (``lr``, ``betas``, ``eps``), so sparse per-datapoint rows get row-wise
    Adam steps (``pyro.optim.Adam`` refuses sparse gradients). ``optim_args`` may be a function of the parameter's
    name, e.g. ``lambda name, p: {"lr": 1e-2 if name.startswith("loc") or "raw_scale" in name else 1e-3}``.

        svi = pyro.infer.SVI(model, guide, pyro_lvm.row_adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    """
    from pyro.optim import PyroOptim  # here, not at import: pyro_lvm's import stays light

    return PyroOptim(LazyAdam, optim_args)


class Optimizers:
    """A dense optimiser and (if any sparse tables exist) a row-wise one, stepped together."""

    def __init__(
        self,
        dense: torch.optim.Optimizer | None,
        sparse: torch.optim.Optimizer | None,
        clip_norm: float | None = None,
    ) -> None:
        self.dense, self.sparse, self.clip_norm = dense, sparse, clip_norm
        self.description = ", ".join(
            name
            for name, opt in [
                ("Adam (dense, fused)" if dense and dense.defaults.get("fused") else "Adam (dense)", dense),
                ("RowAdam (row-wise, per-row step counts)", sparse),
            ]
            if opt
        )

    def _all(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.dense, self.sparse) if opt is not None]

    def zero_grad(self) -> None:
        for opt in self._all():
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.clip_norm is not None and self.dense is not None:
            params = [p for group in self.dense.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        for opt in self._all():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "dense": self.dense.state_dict() if self.dense else None,
            "sparse": self.sparse.state_dict() if self.sparse else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, opt in (("dense", self.dense), ("sparse", self.sparse)):
            if opt is not None:
                fused = [group.get("fused") for group in opt.param_groups]
                opt.load_state_dict(state[key])
                for group, flag in zip(opt.param_groups, fused, strict=True):
                    group["fused"] = flag  # the run's config decides, not the checkpoint's optimiser
                    for p in group["params"] if flag else []:
                        if "step" in opt.state.get(p, {}):  # the fused kernel wants its step counter on p's device
                            opt.state[p]["step"] = opt.state[p]["step"].to(p.device, torch.float32)


class AdamOptions(Options):
    lr: float = Field(1e-3, gt=0.0)
    local_lr: float = Field(1e-2, gt=0.0)  # per-datapoint local parameters (row-wise Adam)
    clip_norm: float | None = Field(None, gt=0.0)
    # torch's fused Adam kernel for the dense parameters: one kernel instead of a loop over tensors (~16%
    # less per step at batch 128 on 2 CPU cores, benchmarks/README.md). Off by default: it rounds differently
    # (~1e-7 per step), so runs would not reproduce the figures recorded with the default loop to the digit.
    fused: bool = False


@OPTIMS.register("adam", AdamOptions)
def adam(
    modules: list[nn.Module],
    lr: float = 1e-3,
    local_lr: float = 1e-2,
    clip_norm: float | None = None,
    fused: bool = False,
    **_: object,
) -> Optimizers:
    """Adam for the dense parameters (``fused``: torch's one-kernel implementation), RowAdam for sparse tables."""
    sparse_ids = _sparse_params(modules)
    seen: set[int] = set()
    dense, sparse = [], []
    for module in modules:
        for p in module.parameters():
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (sparse if id(p) in sparse_ids else dense).append(p)
    dense_opt = torch.optim.Adam(dense, lr=lr, fused=fused or None) if dense else None
    sparse_opt = RowAdam(sparse, lr=local_lr) if sparse else None
    return Optimizers(dense_opt, sparse_opt, clip_norm)
