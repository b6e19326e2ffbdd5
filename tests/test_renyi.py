"""elbo.name = 'renyi': the per-datapoint IWAE / Rényi bound, reduced per datapoint before the N/B scale."""

import math
import subprocess
import sys

import pytest
import torch
from helpers import linear_gaussian_experiment, make_elbo, tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides.local import MIN_SCALE
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.training.experiment import Experiment

N, K = 60, 5


def _normal_log_density(value, loc, scale):
    """Σ over the last dim of log N(value; loc, scale²), written out (``scale`` a tensor or a float)."""
    log_scale = torch.log(scale) if isinstance(scale, torch.Tensor) else math.log(scale)
    return (-0.5 * ((value - loc) / scale) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)


def _hand_loss(lg, exp, x, idx, seed, alpha=0.0, beta=1.0, vectorize=True):
    """−(N/B) Σ_b 1/(1−α) [logsumexp_k (1−α) log w_kb − log K] from the guide's q and the LG formulas."""
    loc, scale = exp.guide.encode(x[idx])  # (B, D)
    torch.manual_seed(seed)  # the draws the guide makes: standard normals of shape (K, B, D), or K of (B, D)
    standard = torch.distributions.Normal(torch.zeros(*loc.shape, dtype=loc.dtype), 1.0)
    eps = standard.rsample((K,)) if vectorize else torch.stack([standard.rsample() for _ in range(K)])
    z = loc + eps * scale  # (K, B, D)
    log_lik = _normal_log_density(x[idx], z @ lg.W.T + lg.b, lg.s)  # (K, B)
    log_prior = _normal_log_density(z, torch.zeros_like(z), 1.0)
    log_q = _normal_log_density(z, loc, scale)
    log_w = log_lik + beta * (log_prior - log_q)
    a = 1.0 - alpha
    per_point = (torch.logsumexp(a * log_w, 0) - math.log(K)) / a  # (B,)
    return -(N / len(idx)) * per_point.sum()


@pytest.mark.parametrize("vectorize", [True, False], ids=["vectorized", "particle_loop"])
@pytest.mark.parametrize("alpha, beta", [(0.0, 1.0), (0.0, 0.3), (0.5, 1.0)])
def test_loss_is_the_per_datapoint_bound_scaled_by_n_over_b(alpha, beta, vectorize):
    """Subsampled (N/B = 15): the loss equals N/B × Σ_b of the bound computed by hand from the same draws, with
    the K particles in one plate or drawn one after another (elbo.vectorize_particles = false: K draws of (B, D)).
    Pyro's RenyiELBO (the old 'renyi') scales inside the logsumexp and fails this by nats."""
    lg, x, exp = linear_gaussian_experiment("amortized", N)
    idx = torch.tensor([3, 7, 11, 20])
    elbo = make_elbo("renyi", "off", num_particles=K, alpha=alpha, vectorize_particles=vectorize)
    assert elbo.vectorize_particles is vectorize
    for seed in (0, 1):
        torch.manual_seed(seed)
        loss = loss_and_backward(elbo, exp.model, exp.guide, x[idx], None, idx=idx, num_data=N, beta=beta)
        with torch.no_grad():
            expected = _hand_loss(lg, exp, x, idx, seed, alpha, beta, vectorize)
        assert abs(loss.item() - float(expected)) < 1e-10 * max(1.0, abs(float(expected))), (loss, expected)


def test_one_particle_equals_the_beta_weighted_trace_elbo():
    """K = 1: log w is a single draw, so the objective is Trace_ELBO's (with the same β) on the same draw."""
    _, x, exp = linear_gaussian_experiment("amortized", N)
    idx = torch.tensor([1, 2, 5, 8, 13])
    for beta in (1.0, 0.25):
        torch.manual_seed(4)
        ours = make_elbo("renyi", "off", num_particles=1).differentiable_loss(
            exp.model, exp.guide, x[idx], None, idx=idx, num_data=N, beta=beta
        )
        torch.manual_seed(4)
        trace = make_elbo("trace", "off").differentiable_loss(
            exp.model, exp.guide, x[idx], None, idx=idx, num_data=N, beta=beta
        )
        assert abs(ours.item() - trace.item()) < 1e-10 * abs(trace.item())


@pytest.mark.slow
def test_expectation_rises_with_k_toward_the_exact_log_evidence():
    """E[IWAE_K] ≥ ELBO, increasing in K, and below the exact log p(x) (LG model, per-datapoint q = the exact
    posterior's marginals with scales × 1.5, subsampled batches). Tolerances: 4 standard errors over repeats."""
    lg, x, exp = linear_gaussian_experiment("per_datapoint", N)
    loc, cov = lg.posterior(x)
    with torch.no_grad():
        exp.guide.loc.weight.copy_(loc)
        sd = (1.5 * cov.diagonal().sqrt() - MIN_SCALE).expand_as(loc)  # softplus(raw) + MIN_SCALE = 1.5 sd
        exp.guide.raw_scale.weight.copy_(torch.log(torch.expm1(sd)))
    idx = torch.arange(0, N, 6)  # 10 rows, N/B = 6
    exact = float(lg.log_evidence(x[idx]).mean())
    means, ses = {}, {}
    repeats = 300
    for k in (1, 5, 50):
        elbo = make_elbo("renyi", "off", num_particles=k)
        torch.manual_seed(100 + k)
        with torch.no_grad():
            vals = torch.stack(
                [
                    -elbo.differentiable_loss(exp.model, exp.guide, x[idx], None, idx=idx, num_data=N) / N
                    for _ in range(repeats)
                ]
            )
        means[k], ses[k] = float(vals.mean()), float(vals.std() / math.sqrt(repeats))
    se = lambda a, b: 4 * math.hypot(ses[a], ses[b])  # noqa: E731
    assert means[5] - means[1] > se(5, 1), (means, ses)
    assert means[50] - means[5] > se(50, 5), (means, ses)
    assert means[50] < exact + 4 * ses[50], (means, exact)
    assert exact - means[50] < 0.5 * (exact - means[1]), (means, exact)  # closes most of the ELBO's gap


def test_alpha_one_is_refused_with_one_line():
    with pytest.raises(PyroLVMError, match="alpha = 1 is the ELBO"):
        make_elbo("renyi", "off", num_particles=5, alpha=1.0)
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_lvm.cli", "train", "experiments/digits_vae.toml"]
        + ["--set", "elbo.name=renyi", "--set", "elbo.alpha=1.0", "--set", "train.steps=1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "alpha = 1 is the ELBO" in proc.stderr


@pytest.mark.parametrize("name", ["trace", "renyi"])
def test_semi_amortized_trains_with_several_particles(name):
    """The refinement's own sample plate used to collide with the ELBO's vectorised particle plate (dim −2)."""
    exp = Experiment.from_config(tiny_config(guide={"name": "semi_amortized"}, elbo={"name": name, "num_particles": 3}))
    x, idx = exp.data.train.x[:32], torch.arange(32)
    for _ in range(2):
        exp.optim.zero_grad()
        loss = loss_and_backward(exp.elbo, exp.model, exp.guide, x, None, idx=idx, num_data=len(exp.data.train))
        assert torch.isfinite(loss)
        exp.optim.step()
    assert all(p.grad is not None for p in exp.guide.parameters())
