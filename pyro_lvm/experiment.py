"""An experiment: the data, condition, model, guide, ELBO and optimiser that a config describes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pyro.nn import PyroModule

from pyro_lvm.conditions import Condition
from pyro_lvm.config import Config
from pyro_lvm.data import Dataset, load_dataset
from pyro_lvm.elbos import build_elbo
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides import build_guide
from pyro_lvm.models import build_model
from pyro_lvm.optim import OPTIMS, Optimizers
from pyro_lvm.seeding import seeded


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PyroLVMError(f"train.device = {name!r} but no CUDA device is available; use train.device = 'cpu'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PyroLVMError(f"train.device = {name!r} is not a torch device; use 'cpu' or 'cuda'") from None


@dataclass
class Experiment:
    cfg: Config
    data: Dataset
    condition: Condition
    model: PyroModule
    guide: PyroModule
    elbo: Any
    optim: Optimizers
    device: torch.device

    @classmethod
    def from_config(cfg_cls, cfg: Config, data: Dataset | None = None) -> Experiment:
        device = resolve_device(cfg.train.device)
        dtype = getattr(torch, cfg.train.dtype)
        data = (data or load_dataset(cfg.data)).to(device, dtype)
        condition = Condition.build(
            cfg.model.condition,
            data.num_features,
            data.num_classes,
            data.image_shape,
            cfg.model.observed_quadrants,
        )
        with seeded(cfg.train.seed):  # parameter initialisation is seeded by train.seed
            model = build_model(cfg, condition.target_dim, condition.cond_dim).to(device, dtype)
            guide = build_guide(cfg, condition.target_dim, condition.cond_dim, len(data.train), model)
            guide = guide.to(device, dtype)
        elbo = build_elbo(
            cfg.elbo.name,
            cfg.elbo.jit,
            num_particles=cfg.elbo.num_particles,
            vectorize_particles=cfg.elbo.vectorize_particles,
            alpha=cfg.elbo.alpha,
        )
        optim = OPTIMS.build(
            cfg.optim.name,
            modules=[model, guide],
            lr=cfg.optim.lr,
            local_lr=cfg.optim.local_lr,
            clip_norm=cfg.optim.clip_norm,
            fused=cfg.optim.fused,
        )
        return cfg_cls(cfg, data, condition, model, guide, elbo, optim, device)

    @property
    def amortized(self) -> bool:
        """True when the guide can infer q(z|x) for unseen x (not a table of training rows)."""
        return self.cfg.guide.name != "per_datapoint"
