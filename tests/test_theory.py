"""The seed's theory, asserted: the ELBO identity, IWAE convergence to the exact log p(x), KL directions."""

import math

import pytest
import torch
from helpers import linear_gaussian_experiment, scaled_posterior, tiny_config

from pyro_lvm import config
from pyro_lvm.evaluation.estimates import estimates_from_q
from pyro_lvm.studies.identity import elbo_identity_study
from pyro_lvm.studies.kl_directions import kl_directions_study

IDENTITY_CONFIG = "experiments/elbo_identity.toml"


def test_elbo_identity_for_five_guides(tmp_path):
    cfg = config.load(IDENTITY_CONFIG, ["train.steps=150", "train.progress=false"])
    terms = elbo_identity_study(cfg, tmp_path, num_points=40, num_samples=400)
    by_name = {t.guide: t for t in terms}
    assert list(by_name) == ["exact posterior", "amortized", "per_datapoint", "amortized_flow", "prior as guide"]
    flow = by_name["amortized_flow"]  # no closed form: its KL is log p(x) − the sampled ELBO
    assert flow.elbo.isnan().all() and torch.allclose(flow.kl, flow.log_px - flow.elbo_mc)
    for t in terms:
        if t is flow:
            continue
        assert t.identity_error < 1e-6, t.guide  # analytic, float64
        assert t.max_mc_z < 4.5, t.guide  # sampled ELBO within Monte-Carlo error of the analytic one (40 points)
        assert (t.kl >= -1e-10).all()
    assert by_name["exact posterior"].kl.abs().max() < 1e-10
    # the exact posterior makes log w constant: the sampled ELBO is log p(x) with zero variance
    assert torch.allclose(by_name["exact posterior"].elbo_mc, by_name["exact posterior"].log_px, atol=1e-9)
    assert by_name["prior as guide"].kl.mean() > 10 * by_name["amortized"].kl.mean()


def test_iwae_converges_to_exact_log_evidence():
    """log p̂_K(x) → log p(x): the mean error shrinks with K and at K = 20,000 it is within 4 standard errors of 0
    (SE from the spread of the per-datapoint errors); IWAE ≥ ELBO for every datapoint."""
    lg, x, exp = linear_gaussian_experiment("amortized", 200)
    q = scaled_posterior(lg, x, 1.8)  # a proposal wider than the posterior: finite-variance weights
    exact = lg.log_evidence(x)
    torch.manual_seed(0)
    bias = {}
    for k in (1, 100, 20000):
        lp, elbo = estimates_from_q(exp.model, q, x, None, num_samples=k, chunk_size=5000)
        assert (lp >= elbo - 1e-12).all()
        err = lp - exact
        bias[k] = (float(err.mean()), float(err.std() / math.sqrt(len(err))))
    assert bias[1][0] + 4 * bias[1][1] < bias[100][0] < 0  # the bound tightens from below
    mean, se = bias[20000]
    assert abs(mean) < 4 * se + 1e-4, bias


@pytest.mark.parametrize("dim", [1, 2])
def test_reverse_kl_seeks_a_mode_forward_kl_covers_both(dim):
    target, (reverse, forward) = kl_directions_study(dim, steps=800)
    modes = target.component_distribution.base_dist.loc  # (2, dim)
    mode_var = float(target.component_distribution.base_dist.scale[0, 0] ** 2)
    assert min(float((reverse.q.loc - m).norm()) for m in modes) < 0.5
    lo, hi = modes.min(0).values, modes.max(0).values
    assert ((forward.q.loc > lo) & (forward.q.loc < hi)).all()
    assert (forward.q.covariance_matrix.diagonal() > mode_var).all()
    # q inside one mode of an equal mixture: KL(q || p) -> log 2; each fit wins its own direction
    assert abs(reverse.reverse_kl - math.log(2)) < 0.05
    assert reverse.reverse_kl < forward.reverse_kl and forward.forward_kl < reverse.forward_kl


def test_identity_needs_the_linear_gaussian_model(tmp_path):
    from pyro_lvm.errors import PyroLVMError

    cfg = config.with_overrides(tiny_config(), ["data.name='linear_gaussian'", "data.binarize='none'"])
    with pytest.raises(PyroLVMError, match="linear-Gaussian model"):
        elbo_identity_study(cfg, tmp_path, 5, 5)
