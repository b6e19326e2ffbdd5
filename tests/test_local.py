"""The local pieces every guide shares (pyro_lvm/guides/local.py), per datapoint, against hand-written float64
formulas on the linear-Gaussian model and on a linear-Gaussian CVAE with a learned p(z | c): the log joint, the local
ELBO (its default sample count, flat and plated), and the refusal of x = None."""

import math

import pytest
import torch
from helpers import linear_gaussian_experiment
from test_pinned_values import conditional_prior_cvae

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides import local_elbo, log_joint_per_datapoint
from pyro_lvm.guides.local import needs_x

LOG_2PI = math.log(2 * math.pi)
F64 = torch.float64


def _log_normal(value, loc, scale):
    """Σ over the last dim of log N(value; loc, scale²), written out."""
    return (-0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def _lg_log_joint(lg, x, z):
    """log p(x, z) = log N(z; 0, I) + log N(x; W z + b, s² I) for z (S, B, D): (S, B)."""
    one = torch.ones((), dtype=F64)
    return _log_normal(z, 0 * one, one) + _log_normal(x, z @ lg.W.T + lg.b, lg.s * one)


def _qs(B, seed=1):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(B, 2, generator=g, dtype=F64)
    scale = 0.2 + torch.rand(B, 2, generator=g, dtype=F64)  # unequal per row and dimension, not 1
    return loc, scale


@pytest.mark.parametrize("flat", [False, True], ids=["plated", "flat"])
def test_log_joint_per_datapoint_is_the_hand_written_linear_gaussian_joint(flat):
    """(S, B) values of log p(x, z_s,b), unscaled, for S = 3 draws of B = 5 rows: plated and folded alike."""
    lg, x, exp = linear_gaussian_experiment("amortized", 5)
    z = torch.randn(3, 5, 2, dtype=F64)
    ours = log_joint_per_datapoint(exp.model, x, None, z, flat=flat)
    assert ours.shape == (3, 5)
    assert torch.allclose(ours, _lg_log_joint(lg, x, z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flat", [False, True], ids=["plated", "flat"])
def test_log_joint_per_datapoint_of_a_cvae_reads_the_learned_conditional_prior(flat):
    """log p(x, z | c) = log N(z; A c, diag softplus(R c)²) + log N(x; W z + V c + b, s² I), the CVAE's parts
    written out (the condition folded with the draws when flat)."""
    exp, x, c, _, _ = conditional_prior_cvae(n=6)
    z = 1.5 * torch.randn(4, 6, 2, dtype=F64)
    head = exp.model.prior.net.net.weight  # (2 D, K): rows A then R; no bias
    loc, scale = c @ head[:2].T, torch.nn.functional.softplus(c @ head[2:].T) + 1e-4
    decoder = exp.model.decoder[0]
    W, V = decoder.weight[:, :2], decoder.weight[:, 2:]
    s = exp.model.likelihood.scale
    mean = z @ W.T + c @ V.T + decoder.bias  # (S, B, P)
    theirs = _log_normal(z, loc, scale) + _log_normal(x, mean, s * torch.ones((), dtype=F64))
    with torch.no_grad():
        ours = log_joint_per_datapoint(exp.model, x, c, z, flat=flat)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12), (ours, theirs)


@pytest.mark.parametrize("num_samples, flat", [(None, False), (5, False), (5, True)], ids=["default", "S5", "S5-flat"])
def test_local_elbo_per_datapoint_is_the_mean_log_joint_plus_the_gaussian_entropy(num_samples, flat):
    """Per row b: mean_s log p(x_b, mu_b + sigma_b eps_s,b) + Σ_d (½ log(2πe) + log sigma_b,d), from the same
    noise eps (S, B, D); by default S = 1. Each row its own value (not the batch mean)."""
    lg, x, exp = linear_gaussian_experiment("amortized", 6)
    loc, scale = _qs(6)
    args = () if num_samples is None else (num_samples, flat)
    torch.manual_seed(7)
    ours = local_elbo(exp.model, x, None, loc, scale, *args)
    torch.manual_seed(7)
    eps = torch.randn(num_samples or 1, 6, 2, dtype=F64)
    entropy = (0.5 + 0.5 * LOG_2PI + torch.log(scale)).sum(-1)
    theirs = _lg_log_joint(lg, x, loc + scale * eps).mean(0) + entropy
    assert ours.shape == (6,)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12), (ours, theirs)
    assert theirs.std() > 1.0  # the rows differ: a batch-averaged value would not pass


def test_local_elbo_of_the_exact_posterior_reaches_log_px():
    """With q = p(z | x) (diagonal: W has orthogonal columns) the local ELBO is log p(x) − 0 in expectation: within
    4 Monte-Carlo standard errors of the exact log evidence (S = 4,000 draws per row)."""
    lg, x, exp = linear_gaussian_experiment("amortized", 4)
    post_loc, post_cov = lg.posterior(x)
    scale = post_cov.diagonal().sqrt().expand_as(post_loc)
    torch.manual_seed(2)
    S = 4000
    ours = local_elbo(exp.model, x, None, post_loc, scale, S)
    torch.manual_seed(2)
    eps = torch.randn(S, 4, 2, dtype=F64)
    per_draw = _lg_log_joint(lg, x, post_loc + scale * eps)  # (S, B)
    stderr = per_draw.std(0) / math.sqrt(S)
    assert ((ours - lg.log_evidence(x)).abs() < 4 * stderr).all(), (ours, lg.log_evidence(x), stderr)


def test_a_guide_called_without_x_is_refused_in_one_line():
    message = (
        "this guide encodes x and was called with x=None; for posterior predictive draws pass x with observe=False"
    )
    with pytest.raises(PyroLVMError) as err:
        needs_x(None)
    assert str(err.value) == message
    needs_x(torch.zeros(2, 3))  # any x is accepted
    _, _, exp = linear_gaussian_experiment("amortized", 3)
    with pytest.raises(PyroLVMError) as err:
        exp.guide(None)
    assert str(err.value) == message
