"""Optimisers: one torch optimiser over the dense parameters, and a row-wise one for sparse local tables.

Pyro's ``pyro.optim`` makes one torch optimiser per parameter tensor and, for a per-datapoint table, sweeps all
N rows every step (pyro-ppl/pyro#2386). Here dense parameters get one ``torch.optim.Adam``; the per-datapoint
``nn.Embedding(sparse=True)`` tables get ``torch.optim.SparseAdam``: a row's moments are updated only when the row
is in the batch ("lazy" Adam), so untouched rows stay bit-identical and a step costs O(batch). Lazy Adam is not
dense Adam: rows seen rarely keep stale moments. Runs record which optimiser was used.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pyro_lvm.registry import Registry

OPTIMS: Registry[Any] = Registry("optimiser")


def _sparse_params(modules: list[nn.Module]) -> set[int]:
    ids = set()
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding) and sub.sparse:
                ids.add(id(sub.weight))
    return ids


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
                ("SparseAdam (row-wise, lazy)", sparse),
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


@OPTIMS.register("adam")
def adam(
    modules: list[nn.Module], lr: float, local_lr: float, clip_norm: float | None = None, fused: bool = False
) -> Optimizers:
    """Adam for the dense parameters (``fused``: torch's one-kernel implementation), SparseAdam for sparse tables."""
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
    sparse_opt = torch.optim.SparseAdam(sparse, lr=local_lr) if sparse else None
    return Optimizers(dense_opt, sparse_opt, clip_norm)
