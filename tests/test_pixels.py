"""Likelihoods for real-valued pixels against independent formulas: the continuous Bernoulli's normaliser, the
discretized logistic's bin masses (from the logistic CDF, and summing to 1 over the 256 values of a pixel)."""

import math

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.models.pixels import ContinuousBernoulliLikelihood, DiscretizedLogisticLikelihood
from pyro_lvm.registry import LIKELIHOODS


def test_continuous_bernoulli_is_the_normalised_bernoulli_shape():
    """log p(x|λ) = x log λ + (1−x) log(1−λ) + log C(λ), C(λ) = 2 artanh(1−2λ)/(1−2λ), by hand (float64)."""
    logits = torch.tensor([[-2.0, 0.3, 1.7]], dtype=torch.float64)
    x = torch.tensor([[0.1, 0.5, 0.93]], dtype=torch.float64)
    lam = torch.sigmoid(logits)
    log_c = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    expected = (x * lam.log() + (1 - x) * (1 - lam).log() + log_c).sum(-1)
    assert torch.allclose(ContinuousBernoulliLikelihood()(logits).log_prob(x), expected, atol=1e-10)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)[:, None].expand(-1, 3)  # integrates to 1 per pixel
    density = torch.distributions.ContinuousBernoulli(logits=logits[0]).log_prob(grid).exp()
    assert torch.allclose(torch.trapezoid(density, grid[:, 0], dim=0), torch.ones(3, dtype=torch.float64), atol=1e-6)


def _logistic_cdf(v, loc, scale):
    z = (v - loc) / scale
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@pytest.mark.parametrize("loc, log_scale", [(0.3, math.log(0.05)), (0.02, math.log(0.2)), (0.99, math.log(1e-3))])
def test_discretized_logistic_masses_are_cdf_differences_and_sum_to_one(loc, log_scale):
    lik = DiscretizedLogisticLikelihood(num_features=1).double()
    with torch.no_grad():
        lik.log_scale.fill_(log_scale)
    logit = torch.tensor([[math.log(loc / (1 - loc))]], dtype=torch.float64)
    values = torch.arange(256, dtype=torch.float64)[:, None, None] / 255  # (256, 1, 1): every value of the pixel
    log_mass = lik(logit.expand(256, 1, 1)).log_prob(values)[:, 0].detach()  # (256,)
    assert abs(float(torch.logsumexp(log_mass.detach(), 0))) < 1e-9
    s, h = math.exp(log_scale), 0.5 / 255
    for k in (0, 1, 77, 128, 254, 255):
        x = k / 255
        upper = 1.0 if k == 255 else _logistic_cdf(x + h, loc, s)
        lower = 0.0 if k == 0 else _logistic_cdf(x - h, loc, s)
        if upper - lower > 1e-12:  # where the float64 subtraction of two CDFs still carries digits
            assert abs(float(log_mass[k]) - math.log(upper - lower)) < 1e-6 * max(1, abs(math.log(upper - lower))), k


def test_discretized_logistic_refuses_values_off_the_8_bit_grid():
    lik = DiscretizedLogisticLikelihood(num_features=2)
    with pytest.raises(PyroLVMError, match="8-bit pixels"):
        lik(torch.zeros(1, 2)).log_prob(torch.tensor([[0.5, 0.2]]))


@pytest.mark.parametrize("likelihood", ["continuous_bernoulli", "discretized_logistic"])
def test_grey_digits_train_and_evaluate_with_bits_per_dim(likelihood, tmp_path):
    """digits are 17-level grey images (k/16): rescaled to k/255 steps they are 8-bit data for the discretized
    logistic; the continuous Bernoulli takes them as they are."""
    from pyro_lvm.data.tensors import from_tensors
    from pyro_lvm.studies.report import evaluate_experiment
    from pyro_lvm.training.experiment import Experiment
    from pyro_lvm.training.run import train

    assert likelihood in LIKELIHOODS
    cfg = tiny_config(likelihood={"name": likelihood}, data={"binarize": "none"})
    base = Experiment.from_config(cfg).data
    x = (base.train.x * 16).round() * 15 / 255  # 8-bit values k/255
    exp = Experiment.from_config(cfg, from_tensors(x, base.train.y, image_shape=(8, 8)))
    train(exp)
    out = evaluate_experiment(exp)
    assert math.isfinite(out["log_px"]["mean"])
    if likelihood == "discretized_logistic":
        bpd = out["bits_per_dim"]["mean"]
        assert bpd == pytest.approx(-out["log_px"]["mean"] / (64 * math.log(2)))
        assert out["log_px"]["mean"] < 0 and out["baseline_log_px"]["mean"] < 0  # log-probabilities
    else:
        assert "bits_per_dim" not in out
