"""An experiment: the data, condition, model, guide, ELBO and optimiser that a config describes (or that a user
hands over as objects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pyro.nn import PyroModule

from pyro_lvm import config as config_mod
from pyro_lvm.config import Config
from pyro_lvm.config.checks import check_hidden_labels
from pyro_lvm.context import adopt, scoped
from pyro_lvm.data import Dataset, load_dataset
from pyro_lvm.data.conditions import Condition
from pyro_lvm.data.labelled import labelled_mask
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides import build_guide
from pyro_lvm.guides.amortized import encoder_cost
from pyro_lvm.models.priors import mixture_cost, network_prior_cost
from pyro_lvm.models.vae import build_model, decoder_cost
from pyro_lvm.registry import GUIDES, MODELS, OPTIMS, PRIORS
from pyro_lvm.resources import Cost, require
from pyro_lvm.seeding import seeded
from pyro_lvm.training.recipes import recipe_for
from pyro_lvm.training.strategies.ddp import shard, shards_rows, table_names
from pyro_lvm.training.strategies.devices import resolve_device


def _prior_guess(opts, **sizes) -> Cost:
    """A user's prior that names no cost: its network and mixture components, where its options have them."""
    return Cost(network_prior_cost(opts, **sizes).parameters + mixture_cost(opts, **sizes).parameters)


def _check_memory(
    cfg: Config, num_features: int, cond_dim: int, num_data: int, dtype: torch.dtype, device: torch.device
) -> None:
    """Parameters, gradients and two Adam moments of every component the config asks for (each says what it costs:
    the ``memory`` its registration names, ``pyro_lvm.resources.Cost``), and a training batch's activations, against
    the memory of the device they will live on, before anything is built."""
    D = cfg.model.latent_dim
    sizes = {"latent_dim": D, "num_features": num_features, "cond_dim": cond_dim, "num_data": num_data}
    # a component that names no cost (a user's) is estimated as the built-ins are, from the options it shares
    parts = ((MODELS, cfg.model, decoder_cost), (GUIDES, cfg.guide, encoder_cost), (PRIORS, cfg.prior, _prior_guess))
    costs = [registry.trait(opts.name, "memory", guess)(opts, **sizes) for registry, opts, guess in parts]
    count = sum(c.parameters for c in costs)
    widths = num_features + D + sum(c.widths for c in costs)
    # forward values of one batch, kept for the backward pass (x4: pre- and post-activation, and their gradients)
    activations = min(cfg.train.batch_size, num_data) * cfg.elbo.num_particles * widths * 4
    size = torch.finfo(dtype).bits // 8
    require(
        (4 * count + activations) * size,
        "the model, guide and optimiser state (with one batch's activations)",
        "lower the widths (hidden), model.latent_dim, prior.num_components, train.batch_size or elbo.num_particles",
        device,
    )


def _check_targets(model, data: Dataset) -> None:
    """A binary likelihood on values outside [0, 1] has a loss unbounded below: refused once, here, since Pyro's
    per-step validation (which also refuses grey values) is off by default for speed."""
    if getattr(getattr(model, "likelihood", None), "binary", False):
        x = data.train.x
        if len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
            raise PyroLVMError(
                f"the data run from {float(x.min()):.3g} to {float(x.max()):.3g}, outside [0, 1], under a bernoulli "
                "likelihood: set data.binarize = 'static', rescale the data, or use likelihood.name = 'gaussian'"
            )


def with_labels(cfg: Config, data: Dataset) -> Dataset:
    """Scarce labels wherever the data came from: ``data.labelled`` of the config on a dataset handed over without
    a mask (``from_tensors``), and a mask only for the model that learns from it."""
    if cfg.data.labelled is not None and data.labelled is None:
        seed = cfg.data.seed * 1_000_003 + cfg.data.label_seed  # as load_dataset draws it
        data.labelled = labelled_mask(data.train.y, cfg.data.labelled, data.num_classes, seed)
    if data.labelled is not None:
        check_hidden_labels(cfg, handed_over=True)
    return data


@dataclass
class Experiment:
    """Everything one training run needs. ``cfg`` holds the settings of the loop (``train``, ``eval``) and, for
    an experiment built from a config, the components' options."""

    cfg: Config
    data: Dataset
    condition: Condition
    model: PyroModule
    guide: PyroModule
    elbo: Any
    optim: Any
    device: torch.device
    # False for ``from_objects``: ``cfg`` then describes the loop, not the model and guide, and is not saved as
    # a run folder's config (the CLI could not rebuild the objects from it)
    configured: bool = True
    # per-datapoint rows that a job of several ranks shards (each rank holds its part): decided once, here
    sharded: bool = False

    @classmethod
    @scoped
    def from_config(cls, cfg: Config, data: Dataset | None = None) -> Experiment:
        """Build every component the config names, each with its own options; ``data`` replaces the config's
        dataset (e.g. ``pyro_lvm.from_tensors(x, y)``). Parameter initialisation is seeded by ``train.seed``."""
        device = resolve_device(cfg.train.device)
        dtype = getattr(torch, cfg.train.dtype)
        data = with_labels(cfg, data or load_dataset(cfg.data)).to(device, dtype)
        sharded = shards_rows(cfg.guide.name)
        if sharded:
            data = shard(data)  # several ranks: each builds and keeps the per-datapoint rows of its part
        condition = Condition.build(
            getattr(cfg.model, "condition", "none"),
            data.num_features,
            data.num_classes,
            data.image_shape,
            getattr(cfg.model, "observed_quadrants", 1),
            partial=data.labelled is not None,  # hidden labels (data.labelled) become rows of zeros
        )
        _check_memory(cfg, condition.target_dim, condition.cond_dim, len(data.train), dtype, device)
        # image networks get the image shape, and for a quadrant CVAE which pixels c shows (the target is the rest)
        shape, mask = data.image_shape, condition.mask
        with seeded(cfg.train.seed):
            model = build_model(cfg, condition.target_dim, condition.cond_dim, shape, mask).to(device, dtype)
            guide = build_guide(
                cfg.guide,
                num_features=condition.target_dim,
                latent_dim=cfg.model.latent_dim,
                cond_dim=condition.cond_dim,
                num_data=len(data.train),
                model=model,
                image_shape=shape,
                observed_mask=mask,
            ).to(device, dtype)
        _check_targets(model, data)
        exp = cls._assemble(cfg, data, condition, model, guide, device)
        exp.sharded = sharded
        return exp

    @classmethod
    @scoped
    def from_objects(
        cls,
        model: PyroModule,
        guide: PyroModule,
        data: Dataset,
        cfg: Config | None = None,
        condition: str = "none",
        overrides: list[str] | None = None,
    ) -> Experiment:
        """An experiment from a model and guide the user built (any ``PyroModule``s with the signature
        ``forward(x, c=None, *, idx=None, num_data=None, beta=1.0)``, built inside or outside ``pyro_lvm.scope``);
        the ELBO, optimiser and loop settings come from ``cfg`` (default: the defaults) with ``--set``-style
        ``overrides``. Its run folders hold checkpoints and metrics but no config.toml: resume it from Python."""
        cfg = config_mod.with_overrides(cfg or Config(), list(overrides or []))
        device = resolve_device(cfg.train.device)
        data = data.to(device, getattr(torch, cfg.train.dtype))
        cond = Condition.build(condition, data.num_features, data.num_classes, data.image_shape, 1)
        dtype = getattr(torch, cfg.train.dtype)
        model, guide = (adopt(m).to(device=device, dtype=dtype) for m in (model, guide))
        exp = cls._assemble(cfg, data, cond, model, guide, device)
        exp.configured, exp.sharded = False, bool(table_names(guide))
        return exp

    @classmethod
    def _assemble(cls, cfg, data, condition, model, guide, device) -> Experiment:
        top = torch.finfo(getattr(torch, cfg.train.dtype)).max
        for key, value in cfg.optim.kwargs().items():  # torch's step multiplies in the parameters' dtype
            if isinstance(value, float) and abs(value) > top:
                raise PyroLVMError(
                    f"optim.{key} = {value:g} is beyond what {cfg.train.dtype} can hold ({top:.3g}); lower it"
                )
        optim = OPTIMS.build(cfg.optim.name, modules=[model, guide], **cfg.optim.kwargs())
        elbo = recipe_for(model).objective(cfg, data, model)  # the model kind's objective
        return cls(cfg, data, condition, model, guide, elbo, optim, device)

    @property
    def recipe(self):
        """How this experiment's model kind trains and is evaluated (``pyro_lvm.training.recipes``)."""
        return recipe_for(self.model)

    @property
    def amortized(self) -> bool:
        """True when the guide can infer q(z|x) for unseen x (not a table of training rows)."""
        return bool(getattr(self.guide, "amortized", True))
