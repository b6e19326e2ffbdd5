"""encode / reconstruct / interpolate / traverse / posterior_predictive / sample / evaluate against closed forms of the
linear-Gaussian model p(z) = N(0, I), p(x | z) = N(W z + b, s² I) (float64), whose posterior is known exactly."""

from __future__ import annotations

import pytest
import torch
from helpers import linear_gaussian_experiment, tiny_config
from torch.nn import functional as F

import pyro_lvm
from pyro_lvm.guides.local import MIN_SCALE
from pyro_lvm.studies.report import prior_samples

Z_MAX = 4.5  # |z-score| bound for a few dozen seeded Monte-Carlo checks


def exact_rows(n: int = 6):
    """A per-datapoint experiment whose rows hold the exact posterior p(z | x_n) (diagonal: W's columns are
    orthogonal) and the model is the LG model."""
    lg, x, exp = linear_gaussian_experiment("per_datapoint", n)
    loc, cov = lg.posterior(x)
    with torch.no_grad():
        exp.guide.loc.weight.copy_(loc)
        sd = cov.diagonal().sqrt()  # softplus(raw) + MIN_SCALE = sd, inverted in float64
        exp.guide.raw_scale.weight.copy_(torch.expm1(sd - MIN_SCALE).log().expand(n, -1))
    return lg, x, exp


def decode(lg, z):
    return z @ lg.W.T + lg.b


def test_per_datapoint_encode_by_index_is_the_table_rows():
    _, _, exp = exact_rows()
    idx = torch.tensor([4, 1])
    enc = pyro_lvm.encode(exp, idx=idx)
    assert torch.equal(enc.mean, exp.guide.loc.weight[idx])
    assert torch.equal(enc.scale, F.softplus(exp.guide.raw_scale.weight[idx]) + MIN_SCALE)


def test_reconstruct_by_index_is_the_closed_form_posterior_mean_decoded():
    lg, x, exp = exact_rows()
    expected = decode(lg, lg.posterior(x)[0])
    assert torch.allclose(pyro_lvm.reconstruct(exp, idx=torch.arange(6)), expected, rtol=0, atol=1e-12)


def test_per_datapoint_encode_of_new_points_fits_the_exact_posterior():
    lg, _, exp = exact_rows()
    new = lg.sample(4, seed=11)
    enc = pyro_lvm.encode(exp, new)
    loc, cov = lg.posterior(new)
    # q* is fitted by Adam on a 10-draw ELBO with two step-size decays: its iterate jitters on the scale of
    # lr / 100 = 1e-4 around the optimum, far inside these bounds
    assert enc.converged is True
    assert torch.allclose(enc.mean, loc, atol=0.02)
    assert torch.allclose(enc.scale, cov.diagonal().sqrt().expand_as(loc), atol=0.02)


@pytest.mark.parametrize("guide_name", ["amortized", "amortized_flow"])
def test_interpolate_runs_between_the_encode_means_and_decodes_them(guide_name):
    lg, x, exp = linear_gaussian_experiment(guide_name, 6)
    means = pyro_lvm.encode(exp, x[[0, 3]]).mean
    z, decoded = pyro_lvm.interpolate(exp, x[0], x[3], steps=5)
    assert torch.allclose(z[0], means[0], atol=1e-12) and torch.allclose(z[-1], means[1], atol=1e-12)
    assert torch.allclose(z[2], (means[0] + means[1]) / 2, atol=1e-12)
    assert torch.allclose(decoded, decode(lg, z), atol=1e-12)


def test_traverse_sets_one_dimension_and_keeps_the_others_at_the_encode_mean():
    lg, x, exp = linear_gaussian_experiment("amortized", 6)
    mean = pyro_lvm.encode(exp, x[:1]).mean[0]
    z, decoded = pyro_lvm.traverse(exp, x[0], 1, [-2.0, 0.0, 3.0])
    assert torch.equal(z[:, 1], torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64))
    assert torch.equal(z[:, 0], mean[0].expand(3))
    assert torch.allclose(decoded, decode(lg, z), atol=1e-12)
    with pytest.raises(pyro_lvm.PyroLVMError, match="not a latent dimension"):
        pyro_lvm.traverse(exp, x[0], 2, [0.0])


def test_posterior_predictive_matches_the_exact_posterior_predictive():
    """With the exact posterior in the rows: x̃ ~ N(W mu + b, W Σ Wᵀ + s² I) per row."""
    lg, x, exp = exact_rows()
    draws = pyro_lvm.posterior_predictive(exp, idx=torch.arange(6), num_samples=4000)
    assert draws.shape == (4000, 6, 5)
    loc, cov = lg.posterior(x)
    var = (lg.W @ cov @ lg.W.T).diagonal() + lg.s**2
    z = (draws.mean(0) - decode(lg, loc)) / (var / 4000).sqrt()
    assert z.abs().max() < Z_MAX


def test_sample_returns_latents_means_and_draws_of_one_prior_draw():
    lg, _, exp = linear_gaussian_experiment("amortized", 6)
    latents = pyro_lvm.sample(exp, 3000, return_="latents")
    assert (latents.mean(0) / (1 / 3000) ** 0.5).abs().max() < Z_MAX  # z ~ N(0, I)
    means = pyro_lvm.sample(exp, 3000, return_="mean")  # the same seeded stream: the same z, decoded
    assert torch.allclose(means, decode(lg, latents), atol=1e-12)
    draws = pyro_lvm.sample(exp, 3000, return_="draws")  # x = W z + b + s ε: residuals are the noise
    resid = (draws - means) / lg.s
    assert (resid.mean(0) / (1 / 3000) ** 0.5).abs().max() < Z_MAX
    assert ((resid.var(0) - 1) / (2 / 3000) ** 0.5).abs().max() < Z_MAX
    with pytest.raises(pyro_lvm.PyroLVMError, match="return_"):
        pyro_lvm.sample(exp, 3, return_="images")


def test_sample_means_are_what_they_were():
    exp = pyro_lvm.Experiment.from_config(tiny_config())
    assert torch.equal(pyro_lvm.sample(exp, 7), prior_samples(exp, 7))


def test_evaluate_takes_k_points_and_split():
    """With the exact posterior as the proposal every importance weight is p(x), so log p̂(x) is exact for any K."""
    lg, x, exp = exact_rows()
    result = pyro_lvm.evaluate(exp, num_samples=3, points=4)
    assert result["num_samples"] == 3 and result["num_points"] == 4
    assert result["log_px"]["mean"] == pytest.approx(float(lg.log_evidence(x[:4]).mean()), abs=1e-9)
    with pytest.raises(pyro_lvm.PyroLVMError, match="split"):
        pyro_lvm.evaluate(exp, split="test")
    _, _, amortized = linear_gaussian_experiment("amortized", 6)
    assert pyro_lvm.evaluate(amortized, split="val", num_samples=2)["split"] == "val"


def test_analysis_leaves_the_callers_random_stream_alone():
    _, x, exp = linear_gaussian_experiment("amortized", 6)
    state = torch.random.get_rng_state()
    pyro_lvm.encode(exp, x, num_samples=3)
    pyro_lvm.posterior_predictive(exp, x, 3)
    pyro_lvm.sample(exp, 4, return_="draws")
    assert torch.equal(torch.random.get_rng_state(), state)
