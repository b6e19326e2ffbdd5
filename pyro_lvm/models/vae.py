"""VAE and CVAE as ``PyroModule`` models. They alone own the sample sites ``"z"`` and ``"x"``.

Shared signature with every guide:
``forward(x=None, c=None, *, idx=None, num_data=None, beta=1.0, batch_size=None, observe=True)``.
- ``x`` (B, P) the observed target; ``c`` (B, C) the condition (CVAE only).
- ``x = None`` (the rows counted by ``batch_size``, ``c`` or ``idx``) or ``observe=False``: the model *draws* the
  site ``"x"`` from p(x | z, c) instead of observing it, so ``pyro.infer.Predictive`` returns prior predictive
  (``Predictive(model, num_samples=S)(batch_size=B)``) and posterior predictive
  (``Predictive(model, guide=guide, num_samples=S)(x, observe=False)``) draws of ``"x"``. Guides ignore
  ``observe`` (they still read x) and ``batch_size``.
- ``idx`` (B,) dataset rows and ``num_data`` N: the plate ``"data"`` subsamples, so log-likelihood terms are
  scaled by N/B (an unbiased estimate of the full-data ELBO).
- ``beta`` scales the ``z`` site in model and guide alike (KL annealing).

The generative process, with f the decoder:  z ~ p(z | c),  x ~ p(x | f(z, c)).
"""

from __future__ import annotations

from typing import Literal

import pyro
import torch
from pydantic import Field, field_validator
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import LIKELIHOODS, MAX_WIDTH, MODELS, NETWORKS, PRIORS, Options, Widths
from pyro_lvm.resources import Cost, network_cost
from pyro_lvm.seeding import seeded


class ModelOptions(Options):
    """Options every model has (the base schema of the ``model`` registry)."""

    latent_dim: int = Field(8, gt=0, le=MAX_WIDTH)
    hidden: Widths = Field(default_factory=lambda: [128, 128])  # decoder widths
    net: str = "mlp"  # the decoder's network (a registered network)
    conv_channels: Widths = Field(default_factory=lambda: [32, 64])  # net = "conv": channels per halving of H, W


MODELS.base = ModelOptions


class VAEOptions(ModelOptions):
    condition: Literal["none"] = "none"

    @field_validator("condition", mode="before")
    @classmethod
    def _no_condition(cls, value: object) -> object:
        if value != "none":
            raise ValueError("model 'vae' takes no condition; use model.name = 'cvae' to condition on c")
        return value


class CVAEOptions(ModelOptions):
    condition: Literal["label", "quadrants"]  # c: the one-hot class, or the observed quadrants of the image
    observed_quadrants: int = Field(1, ge=1, le=3)  # quadrant CVAE: how many of the 4 quadrants c shows

    @field_validator("condition", mode="before")
    @classmethod
    def _a_condition(cls, value: object) -> object:
        if value not in ("label", "quadrants"):
            raise ValueError("model 'cvae' needs model.condition = 'label' or 'quadrants'")
        return value


def batch_rows(x: torch.Tensor | None, c: torch.Tensor | None, idx: torch.Tensor | None, batch_size: int | None) -> int:
    """B: the rows of ``x``, else of ``c``, else of ``idx``, else ``batch_size`` (a model run without data)."""
    for t in (x, c, idx):
        if t is not None:
            if batch_size is not None and batch_size != t.shape[0]:
                raise PyroLVMError(f"batch_size={batch_size} but the inputs have {t.shape[0]} rows; drop batch_size")
            return t.shape[0]
    if batch_size is None:
        raise PyroLVMError("called with x=None and nothing that counts the rows: pass batch_size=N (or c, or idx)")
    return int(batch_size)


def data_plate(
    x: torch.Tensor | None,
    idx: torch.Tensor | None,
    num_data: int | None,
    *,
    c: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> pyro.plate:
    """The local-latent plate. Without ``num_data`` it is the batch itself (no scaling)."""
    batch = batch_rows(x, c, idx, batch_size)
    if num_data is None:
        return pyro.plate("data", batch, dim=-1)
    if idx is None:
        raise PyroLVMError("num_data was given without dataset indices idx; pass the batch's idx as well")
    if batch > num_data:
        raise PyroLVMError(f"batch of {batch} rows is larger than the dataset size num_data={num_data}")
    if idx.shape != (batch,):
        raise PyroLVMError(f"idx has shape {tuple(idx.shape)} but the batch has {batch} rows")
    return pyro.plate("data", num_data, subsample=idx, dim=-1)


def broadcast_cat(z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """Concatenate z (..., B, D) with c (B, C), broadcasting c over leading particle dims."""
    if c is None:
        return z
    return torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], dim=-1)


def decoder_cost(opts, *, latent_dim: int, num_features: int, cond_dim: int, **_: object) -> Cost:
    """The decoder f: (z, c) -> x's memory (``pyro_lvm.resources.Cost``), for the check before it is built; also the
    estimate of a user's model that names no cost (from ``net`` / ``hidden`` where its options have them)."""
    hidden = getattr(opts, "hidden", [])
    return network_cost(getattr(opts, "net", None), [latent_dim + cond_dim, *hidden, num_features])


@MODELS.register("vae", VAEOptions, memory=decoder_cost)
class VAE(PyroModule):
    """p(x, z | c) = p(z | c) p(x | f(z, c)); with no condition (c = None), the plain VAE.

    ``baseline`` (quadrant CVAEs) is the frozen deterministic completion network of pyro_lvm.models.baseline; with
    ``feed_baseline`` the prior network sees its prediction too: p(z | c) := prior([c, E[x | f(c)]]).
    """

    def __init__(
        self,
        prior: PyroModule,
        likelihood: PyroModule,
        decoder: nn.Module,
        latent_dim: int,
        baseline: nn.Module | None = None,
        feed_baseline: bool = False,
        num_features: int | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.likelihood = likelihood
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.baseline = baseline
        self.feed_baseline = feed_baseline
        self.num_features = num_features  # P, the decoder's output width (for ``generate``)

    @property
    def recipe(self) -> str:
        """How this model trains (``pyro_lvm.training.recipes``): a quadrant CVAE fits its completion baseline first."""
        return "plain" if self.baseline is None else "quadrant"

    def prior_dist(self, c: torch.Tensor | None = None):
        """p(z | c), batch (B,) (or () without c), event (D,)."""
        if self.feed_baseline:
            c = torch.cat([c, self.baseline.predict(c)], dim=-1)  # (B, C + P)
        return self.prior(c)

    def forward(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        *,
        idx: torch.Tensor | None = None,
        num_data: int | None = None,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        with data_plate(x, idx, num_data, c=c, batch_size=batch_size):
            with poutine.scale(scale=beta):
                z = pyro.sample("z", self.prior_dist(c))  # (..., B, D)
            out = self.decoder(broadcast_cat(z, c))  # (..., B, P)
            pyro.sample("x", self.likelihood(out), obs=x if observe else None)  # drawn when x is None
        return out

    def decode_mean(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z, c], (..., P): the likelihood's mean (Bernoulli probabilities, Gaussian means, ...)."""
        return self.likelihood(self.decoder(broadcast_cat(z, c))).mean

    def generate(self, c: torch.Tensor | None, num: int) -> torch.Tensor:
        """Decoder means of ``num`` draws z ~ p(z | c), sampled through ``pyro.infer.Predictive``."""
        weight = next(self.decoder.parameters())
        num_out = self.num_features if self.num_features is not None else self.decoder[-1].out_features
        dummy = torch.zeros(num, num_out, device=weight.device, dtype=weight.dtype)
        z = pyro.infer.Predictive(self, num_samples=1, return_sites=["z"])(dummy, c)["z"][0]  # (num, D)
        return self.decode_mean(z, c)


@MODELS.register("cvae", CVAEOptions, memory=decoder_cost)
class CVAE(VAE):
    """The conditional VAE: same program, with the condition c fed to prior and decoder."""


def build_model(cfg, num_features: int, cond_dim: int, image_shape=None, observed_mask=None) -> VAE:
    """The model ``cfg.model`` with its prior ``cfg.prior`` and likelihood ``cfg.likelihood`` (each built with its
    own options); ``cfg.baseline`` and ``cfg.train.seed`` for the quadrant CVAE's completion baseline."""
    from pyro_lvm.models.baseline import CompletionBaseline

    opts = cfg.model
    D = opts.latent_dim
    feed = cfg.baseline.feed_prior
    prior = PRIORS.build(
        cfg.prior.name,
        **cfg.prior.kwargs(),
        latent_dim=D,
        cond_dim=cond_dim + (num_features if feed else 0),
        num_features=num_features,
    )

    def new_likelihood() -> PyroModule:
        return LIKELIHOODS.build(cfg.likelihood.name, **cfg.likelihood.kwargs(), num_features=num_features)

    baseline = None
    if getattr(opts, "condition", "none") == "quadrants":
        # its own seeded stream: the same baseline under every prior variant, and the other nets' start unchanged
        with seeded(cfg.train.seed):
            baseline = CompletionBaseline(cond_dim, cfg.baseline.hidden, num_features, new_likelihood())
    decoder = NETWORKS.build(
        opts.net, n_in=D + cond_dim, n_out=num_features, hidden=list(opts.hidden), role="decoder",
        image_shape=image_shape, conv_channels=list(opts.conv_channels), observed_mask=observed_mask,
    )  # fmt: skip
    parts = dict(
        prior=prior,
        likelihood=new_likelihood(),
        decoder=decoder,
        baseline=baseline,
        feed_baseline=feed,
        num_features=num_features,
        num_classes=cond_dim,  # m2: the label's classes
    )
    return MODELS.build(opts.name, **{**opts.kwargs(), **parts})


from pyro_lvm.models import m2  # noqa: E402, F401  (registers m2, which builds on VAE)
