"""Conditional VAE checks: honest conditional log-likelihoods on an exact model, class-prior KL, generation."""

import math

import numpy as np
import pytest
import torch
from helpers import dataset_from, orthogonal_linear_gaussian, scaled_posterior, tiny_config

from pyro_lvm import config
from pyro_lvm.data.analytic import LinearGaussian
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.cvae_checks import class_prior_kl, generation_accuracy, mean_pairwise_kl, prior_log_px
from pyro_lvm.evaluation.estimates import estimates_from_q
from pyro_lvm.training.experiment import Experiment


def conditional_linear_gaussian(n=40):
    """A CVAE whose linear decoder f(z, c) = W z + v c + b and Gaussian likelihood make p(x | c) exact:
    with c = (1, 0) (every row in class 0 of two; the second column of the decoder is zero),
    p(x | c) = N(b + v, W Wᵀ + s² I)."""
    lg = orthogonal_linear_gaussian()
    v = torch.linspace(-1, 1, lg.W.shape[0], dtype=torch.float64)
    x = lg.sample(n, seed=5) + v
    cfg = tiny_config(
        data={"name": "linear_gaussian", "binarize": "none"},
        model={"name": "cvae", "condition": "label", "latent_dim": 2, "hidden": []},
        likelihood={"name": "gaussian", "scale": lg.s},
        train={"dtype": "float64"},
    )
    exp = Experiment.from_config(cfg, dataset_from(x, num_classes=2))
    with torch.no_grad():
        exp.model.decoder[0].weight.copy_(torch.cat([lg.W, v[:, None], torch.zeros_like(v)[:, None]], dim=1))
        exp.model.decoder[0].bias.copy_(lg.b)
    exact = LinearGaussian(lg.W, lg.b + v, lg.s)
    return exact, x, exp


def test_conditional_estimates_approach_exact_log_px_given_c():
    exact, x, exp = conditional_linear_gaussian()
    c = exp.condition.labels(torch.zeros(len(x), dtype=torch.long), x.dtype)
    truth = exact.log_evidence(x)
    proposal = scaled_posterior(exact, x, 1.5)
    torch.manual_seed(0)
    errors = {}
    for k in (1, 20000):
        lp, _ = estimates_from_q(exp.model, proposal, x, c, k, 5000)
        errors[k] = lp - truth
    assert errors[1].mean() < -0.1  # K = 1: the ELBO, a strict lower bound here
    se = float(errors[20000].std() / math.sqrt(len(x)))
    assert abs(float(errors[20000].mean())) < 4 * se + 1e-3
    prior_mc = prior_log_px(exp.model, x, c, 20000, 5000) - truth  # the prior as proposal: consistent, noisier
    assert abs(float(prior_mc.mean())) < 4 * float(prior_mc.std() / math.sqrt(len(x))) + 0.05


def test_class_prior_kl_is_closed_form_for_the_conditional_prior():
    exp = Experiment.from_config(
        tiny_config(model={"name": "cvae", "condition": "label"}, prior={"name": "conditional"})
    )
    kl = class_prior_kl(exp.model, exp.condition, torch.float32, exp.device)
    assert kl.shape == (10, 10) and torch.allclose(kl.diagonal(), torch.zeros(10), atol=1e-6)
    c = exp.condition.labels(torch.tensor([2, 7]), torch.float32)
    p = exp.model.prior(c)
    p2 = torch.distributions.Independent(torch.distributions.Normal(p.base_dist.loc[0], p.base_dist.scale[0]), 1)
    p7 = torch.distributions.Independent(torch.distributions.Normal(p.base_dist.loc[1], p.base_dist.scale[1]), 1)
    assert torch.allclose(kl[2, 7], torch.distributions.kl_divergence(p2, p7), rtol=1e-5)
    assert mean_pairwise_kl(kl) > 0
    std = Experiment.from_config(tiny_config(model={"name": "cvae", "condition": "label"}))
    assert mean_pairwise_kl(class_prior_kl(std.model, std.condition, torch.float32, std.device)) == 0.0


def test_generation_accuracy_per_class():
    exp = Experiment.from_config(
        tiny_config(model={"name": "cvae", "condition": "label"}, prior={"name": "conditional"})
    )

    class Always3:
        def predict(self, images):
            return np.full(len(images), 3)

    acc = generation_accuracy(exp.model, exp.condition, Always3(), 5, torch.float32, exp.device)
    assert acc.tolist() == [1.0 if k == 3 else 0.0 for k in range(10)]


def test_bad_conditions_are_one_line_errors():
    exp = Experiment.from_config(tiny_config(model={"name": "cvae", "condition": "label"}))
    with pytest.raises(PyroLVMError, match="out of range"):
        exp.condition.labels(torch.tensor([3, 10]), torch.float32)
    quad = Experiment.from_config(tiny_config(model={"name": "cvae", "condition": "quadrants"}))
    with pytest.raises(PyroLVMError, match="quadrant mask covers 64 pixels"):
        quad.condition(torch.zeros(4, 100), torch.zeros(4, dtype=torch.long))


def test_mog_per_class_prior_is_the_class_component():
    exp = Experiment.from_config(
        tiny_config(model={"name": "cvae", "condition": "label"}, prior={"name": "mog", "per_class": True})
    )
    prior = exp.model.prior
    assert prior.locs.shape[0] == 10  # one component per class, whatever num_components says
    c = exp.condition.labels(torch.tensor([3, 7]), torch.float32)
    p = exp.model.prior_dist(c)
    assert torch.equal(p.mean, prior.locs[[3, 7]]) and torch.equal(p.stddev, prior.scales[[3, 7]])
    kl = class_prior_kl(exp.model, exp.condition, torch.float32, exp.device)  # closed form: Gaussians
    assert mean_pairwise_kl(kl) > 1.0 and torch.allclose(kl.diagonal(), torch.zeros(10))
    with pytest.raises(PyroLVMError, match="prior.per_class .* needs model.condition = 'label'"):
        tiny_config(prior={"name": "mog", "per_class": True})
    with pytest.raises(PyroLVMError, match="'per_class' is an option of prior 'mog'"):
        config.from_dict({"prior": {"name": "standard_normal", "per_class": True}})
