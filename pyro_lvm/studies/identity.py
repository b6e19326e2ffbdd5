"""The ELBO identity, runnable on the linear-Gaussian LVM of ``pyro_lvm.data.analytic``:

    log p(x) = ELBO(q, x) + KL(q(z|x) ‖ p(z|x))        for every q and every x.

For a Gaussian q = N(m, S) every term is closed-form (P pixels, D latents, decoder x|z ~ N(W z + b, s² I)):

    E_q log p(x|z) = −P/2 log(2π s²) − (‖x − W m − b‖² + tr(W S Wᵀ)) / (2 s²)
    KL(q ‖ p(z))   = ½ (tr S + ‖m‖² − D − log det S)
    ELBO           = E_q log p(x|z) − KL(q ‖ p(z))

and KL(q ‖ p(z|x)) is the KL between two Gaussians. The sampled ELBO, the mean over K draws of q of
log w = log p(x, z) − log q(z) computed through the library's model, must agree with the analytic ELBO within its
Monte-Carlo standard error std(log w) / √K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_lvm.context import scoped
from pyro_lvm.data.analytic import LinearGaussian
from pyro_lvm.evaluation.estimates import log_weights
from pyro_lvm.seeding import seeded


@dataclass
class IdentityTerms:
    """Per-datapoint terms of the identity for one guide, each (N,)."""

    guide: str
    log_px: torch.Tensor  # exact log p(x)
    elbo: torch.Tensor  # analytic ELBO
    kl: torch.Tensor  # analytic KL(q ‖ p(z|x))
    elbo_mc: torch.Tensor  # sampled ELBO, mean of log w over K draws
    elbo_mc_se: torch.Tensor  # its Monte-Carlo standard error

    @property
    def identity_error(self) -> float:
        """max_n |log p(x) − ELBO − KL|: zero up to floating point."""
        return float((self.log_px - self.elbo - self.kl).abs().max())

    @property
    def max_mc_z(self) -> float:
        """max_n |sampled − analytic ELBO| / SE: of order 1–4 when the sampled ELBO is unbiased."""
        # + 1e-9: for the exact posterior log w is constant, SE = 0, and the difference is rounding only
        return float(((self.elbo_mc - self.elbo).abs() / (self.elbo_mc_se + 1e-9)).max())

    def summary(self) -> dict:
        """Means over datapoints; a term with no closed form (a flow's analytic ELBO) is None, not NaN."""
        values = {
            "log_px": float(self.log_px.mean()),
            "elbo": float(self.elbo.mean()),
            "kl": float(self.kl.mean()),
            "elbo_sampled": float(self.elbo_mc.mean()),
            "identity_error": self.identity_error,
            "max_mc_z": self.max_mc_z,
        }
        return {"guide": self.guide, **{k: None if math.isnan(v) else v for k, v in values.items()}}


def as_full_covariance(q) -> MultivariateNormal:
    """A diagonal Normal(...).to_event(1) (batch (N,), event (D,)) or an MVN, as an MVN."""
    if isinstance(q, MultivariateNormal):
        return q
    return MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))


def analytic_elbo(lg: LinearGaussian, x: torch.Tensor, q: MultivariateNormal) -> torch.Tensor:
    """The closed-form ELBO of the module docstring, (N,)."""
    m, S = q.loc, q.covariance_matrix  # (N, D), (N, D, D)
    P, D = lg.W.shape
    resid = x - m @ lg.W.T - lg.b  # (N, P)
    trace_wsw = torch.einsum("pd,nde,pe->n", lg.W, S, lg.W)
    expected_loglik = -0.5 * P * math.log(2 * math.pi * lg.s**2) - 0.5 * ((resid**2).sum(-1) + trace_wsw) / lg.s**2
    kl_prior = 0.5 * (S.diagonal(dim1=-2, dim2=-1).sum(-1) + (m**2).sum(-1) - D - torch.logdet(S))
    return expected_loglik - kl_prior


def posterior_kl(lg: LinearGaussian, x: torch.Tensor, q: MultivariateNormal) -> torch.Tensor:
    """KL(q(z|x) ‖ p(z|x)), (N,)."""
    loc, cov = lg.posterior(x)
    return kl_divergence(q, MultivariateNormal(loc, covariance_matrix=cov.expand(len(x), -1, -1)))


def identity_terms(name: str, lg: LinearGaussian, model, x: torch.Tensor, q, num_samples: int) -> IdentityTerms:
    """All terms for guide ``q`` (a distribution with batch (N,), event (D,)); the sampled ELBO goes through
    ``model`` (the library's VAE whose decoder is ``lg``)."""
    q_full = as_full_covariance(q)
    lw = log_weights(model, q, x, None, num_samples)  # (K, N)
    return IdentityTerms(
        guide=name,
        log_px=lg.log_evidence(x),
        elbo=analytic_elbo(lg, x, q_full),
        kl=posterior_kl(lg, x, q_full),
        elbo_mc=lw.mean(0),
        elbo_mc_se=lw.std(0) / math.sqrt(num_samples),
    )


def sampled_identity_terms(name: str, lg: LinearGaussian, model, x: torch.Tensor, q, num_samples: int):
    """Terms for a q without a closed-form ELBO (a flow): the sampled ELBO, and KL(q ‖ p(z|x)) = log p(x) − ELBO
    from it (the identity used as the estimator, so its error is the sampled ELBO's); analytic columns are NaN."""
    lw = log_weights(model, q, x, None, num_samples)  # (K, N): q scores its own draws (the flow's cache)
    log_px, elbo_mc = lg.log_evidence(x), lw.mean(0)
    nan = torch.full_like(elbo_mc, math.nan)
    return IdentityTerms(name, log_px, nan, log_px - elbo_mc, elbo_mc, lw.std(0) / math.sqrt(num_samples))


def best_diagonal_kl(lg: LinearGaussian) -> float:
    """The smallest KL(q ‖ p(z|x)) any diagonal Gaussian q reaches, the same for every x (the posterior's
    precision Λ does not depend on x): q's precisions are Λ's diagonal, and

        min KL = ½ (Σ_i log Λ_ii − log det Λ)        (zero only when Λ is diagonal)."""
    _, cov = lg.posterior(lg.sample(1, seed=0))
    precision = torch.linalg.inv(cov.reshape(lg.latent_dim, lg.latent_dim))
    return float(0.5 * (precision.diagonal().log().sum() - torch.logdet(precision)))


def exact_posterior(lg: LinearGaussian, x: torch.Tensor) -> MultivariateNormal:
    loc, cov = lg.posterior(x)
    return MultivariateNormal(loc, covariance_matrix=cov.expand(len(x), -1, -1))


def prior_as_guide(lg: LinearGaussian, x: torch.Tensor) -> MultivariateNormal:
    """q(z|x) = p(z) = N(0, I): ignores x, a deliberately poor guide."""
    D = lg.latent_dim
    eye = torch.eye(D, dtype=x.dtype, device=x.device)
    return MultivariateNormal(torch.zeros(len(x), D, dtype=x.dtype, device=x.device), covariance_matrix=eye)


def frozen_decoder_experiment(cfg, lg: LinearGaussian):
    """An Experiment whose model is exactly ``lg`` (linear decoder, Gaussian likelihood with scale s), frozen, so
    that training moves the guide alone and the exact posterior stays known."""
    from pyro_lvm.errors import PyroLVMError
    from pyro_lvm.training.experiment import Experiment

    if cfg.model.hidden or cfg.likelihood.name != "gaussian" or cfg.likelihood.learn_scale:
        raise PyroLVMError(
            "the ELBO identity needs the linear-Gaussian model: model.hidden = [], likelihood.name = 'gaussian', "
            "likelihood.learn_scale = false"
        )
    if abs(cfg.likelihood.scale - lg.s) > 1e-12 or cfg.model.latent_dim != lg.latent_dim:
        raise PyroLVMError(f"set likelihood.scale = {lg.s} and model.latent_dim = {lg.latent_dim} (the data's model)")
    exp = Experiment.from_config(cfg)
    set_to_linear_gaussian(exp.model, lg)
    exp.model.requires_grad_(False)
    return exp


@torch.no_grad()
def set_to_linear_gaussian(model, lg: LinearGaussian) -> None:
    """Make a VAE with one linear decoder layer (model.hidden = []) and Gaussian likelihood of scale lg.s exactly
    the model ``lg``: decoder(z) = W z + b."""
    model.decoder[0].weight.copy_(lg.W)
    model.decoder[0].bias.copy_(lg.b)


@scoped
def elbo_identity_study(cfg, out_dir, num_points: int, num_samples: int) -> list[IdentityTerms]:
    """Train an amortized, a per-datapoint and an amortized-flow guide on the frozen true model (config ``cfg``,
    data ``linear_gaussian``), then compute the identity's terms on the first ``num_points`` training rows for:
    the exact posterior, the three guides and the prior used as a guide. The flow's KL is sampled
    (``sampled_identity_terms``): it is the row that shows what a family richer than a diagonal Gaussian gains."""
    from pathlib import Path

    from pyro_lvm import config
    from pyro_lvm.data.datasets import linear_gaussian_truth
    from pyro_lvm.evaluation.estimates import guide_distribution
    from pyro_lvm.training.run import train

    lg = linear_gaussian_truth(cfg.data, getattr(torch, cfg.train.dtype))
    trained = {}
    for name in ("amortized", "per_datapoint", "amortized_flow"):
        raw = config.to_dict(cfg)
        raw["guide"]["name"] = name
        config.prune_foreign_options(raw)  # the encoder's options where the guide has none
        exp = frozen_decoder_experiment(config.from_dict(raw), lg)
        train(exp, Path(out_dir) / name, validate=True, overwrite=True)  # the study is re-run whole
        x = exp.data.train.x[:num_points]  # the same rows for both: same data config
        idx = torch.arange(len(x), device=x.device)
        with torch.no_grad():
            trained[name] = guide_distribution(exp.guide, x, None, idx, len(exp.data.train))
    model = exp.model  # both experiments' models are ``lg``, frozen
    rows = [("exact posterior", exact_posterior(lg, x)), ("amortized", trained["amortized"])]
    rows += [("per_datapoint", trained["per_datapoint"]), ("prior as guide", prior_as_guide(lg, x))]
    with seeded(cfg.eval.seed):
        terms = [identity_terms(name, lg, model, x, q, num_samples) for name, q in rows]
        flow = sampled_identity_terms("amortized_flow", lg, model, x, trained["amortized_flow"], num_samples)
    return terms[:3] + [flow] + terms[3:]
