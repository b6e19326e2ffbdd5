"""Small shared builders for tests."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyro_lvm import config
from pyro_lvm.data import Dataset, Split
from pyro_lvm.data.analytic import LinearGaussian
from pyro_lvm.studies.identity import set_to_linear_gaussian
from pyro_lvm.training.experiment import Experiment


def tiny_config(**sections) -> config.Config:
    raw = {
        "data": {"name": "digits", "max_train": 200},
        "model": {"latent_dim": 2, "hidden": [16]},
        "guide": {"hidden": [16]},
        "train": {
            "steps": 20,
            "batch_size": 32,
            "progress": False,
            "pyro_validation": True,
            "checkpoint_every": 10,
        },
        "eval": {"num_samples": 50, "num_points": 40},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    # options given for whichever component owns them (e.g. num_components for every prior a test loops over)
    config.prune_foreign_options(raw)
    return config.from_dict(raw)


def data_options(**options):
    """The validated options of a [data] section (the schema of the dataset it names)."""
    return config.from_dict({"data": options}).data


def orthogonal_linear_gaussian(latent_dim=2, obs_dim=5, s=0.5, seed=0) -> LinearGaussian:
    """W with orthogonal columns, so the exact posterior covariance (I + WᵀW/s²)⁻¹ is diagonal and a
    mean-field Gaussian guide can represent it exactly."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(obs_dim, latent_dim, generator=g, dtype=torch.float64))
    W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)[:latent_dim]
    b = torch.randn(obs_dim, generator=g, dtype=torch.float64)
    return LinearGaussian(W, b, s)


def dataset_from(x: torch.Tensor, num_classes: int = 1) -> Dataset:
    """Every row of ``x`` in class 0 (of ``num_classes``), as the train, validation and test split."""
    y = torch.zeros(len(x), dtype=torch.long)
    split = Split(x, y)
    return Dataset("linear_gaussian", split, split, split, None, num_classes, False)


def linear_gaussian_experiment(guide_name: str, n: int, **sections):
    """(lg, x, exp): n samples of an orthogonal LG model and a float64 VAE whose linear decoder and Gaussian
    likelihood are exactly that model; ``sections`` add config values (e.g. guide options, optim)."""
    lg = orthogonal_linear_gaussian()
    x = lg.sample(n, seed=3)
    raw = {
        "data": {"name": "linear_gaussian", "binarize": "none"},
        "model": {"latent_dim": 2, "hidden": []},
        "likelihood": {"name": "gaussian", "scale": lg.s},
        "guide": {"name": guide_name},
        "train": {"dtype": "float64"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    exp = Experiment.from_config(tiny_config(**raw), dataset_from(x))
    set_to_linear_gaussian(exp.model, lg)
    return lg, x, exp


def scaled_posterior(lg: LinearGaussian, x: torch.Tensor, factor: float):
    """The exact posterior's marginals with their scales multiplied by ``factor``, as a diagonal Normal
    (batch (N,), event (D,)): wider than p(z|x) for factor > 1, narrower for factor < 1."""
    loc, cov = lg.posterior(x)
    return dist.Normal(loc, (factor * cov.diagonal().sqrt()).expand_as(loc)).to_event(1)


def make_elbo(name: str, jit: str = "off", **options):
    """The ELBO ``name`` built from its validated options, as an experiment builds it."""
    from pyro_lvm.infer.elbos import build_elbo

    return build_elbo(config.from_dict({"elbo": {"name": name, "jit": jit, **options}}).elbo)


def tiny_toml(steps: int) -> str:
    """A config file's text for a 2-D latent VAE on 100 digits rows, checkpointed every 2 steps (CLI tests)."""
    return (
        "[data]\nmax_train = 100\n[model]\nlatent_dim = 2\nhidden = [8]\n[guide]\nhidden = [8]\n[train]\n"
        f"steps = {steps}\nbatch_size = 32\nprogress = false\ncheckpoint_every = 2\n"
    )
