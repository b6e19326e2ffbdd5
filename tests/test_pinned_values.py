"""Values pinned against hand computations (float64): M2's label-summed ELBO, one semi-amortized refinement step,
the learned conditional prior's density, and IWAE of a linear-Gaussian CVAE whose p(z | c) is learned and known."""

import math

import pyro.distributions as dist
import pytest
import torch
from helpers import linear_gaussian_experiment, orthogonal_linear_gaussian, tiny_config
from test_m2 import m2_experiment

from pyro_lvm.data import Dataset, Split
from pyro_lvm.evaluation.estimates import estimates_from_q, prior_proposal
from pyro_lvm.evaluation.labels import enumerated_estimates
from pyro_lvm.guides import refine
from pyro_lvm.guides.local import MIN_SCALE, REFINE_MAX_STEP, REFINE_SAMPLES
from pyro_lvm.models.m2 import one_hot
from pyro_lvm.models.priors import ConditionalPrior
from pyro_lvm.training.experiment import Experiment

LOG_2PI = math.log(2 * math.pi)


def _normal_log_density(value, loc, scale):
    """Σ over the last dim of log N(value; loc, scale²), written out."""
    return (-0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def _last_linear(module: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


@pytest.mark.parametrize("peak", [0.0, 9.0], ids=["uniform", "peaked"])
def test_m2_label_summed_elbo_is_the_hand_written_sum_over_labels(peak):
    """ELBO(x) = Σ_k q(k|x) [ELBO(x, k) − log q(k|x)], with ELBO(x, k) = mean_s [log p(x, k, z_s) − log q(z_s|x, k)]
    written out from the same draws (per class: the guide's own draw of z, then S = 7 draws of q(z|x, k) in chunks of 3); the
    classifier is set to uniform (q = 1/K: the entropy term is log K) or peaked (q(3|x) ≈ 0.999)."""
    exp = m2_experiment()
    model, guide, K, S = exp.model, exp.guide, exp.model.num_classes, 7
    with torch.no_grad():
        last = _last_linear(guide.classifier)
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3] = peak
    x = exp.data.test.x[:5]
    torch.manual_seed(11)
    ours = enumerated_estimates(model, guide, x, num_samples=S, chunk_size=3)["elbo"]
    torch.manual_seed(11)
    log_q_y = torch.full((K,), -math.log(K), dtype=x.dtype)
    if peak:
        log_q_y = torch.log_softmax(torch.eye(K, dtype=x.dtype)[3] * peak, -1)
    theirs = torch.zeros(len(x), dtype=x.dtype)
    with torch.no_grad():
        for k in range(K):
            c = one_hot(torch.full((len(x),), k), K, x.dtype)
            loc, scale = guide.encode(x, c)
            dist.Normal(loc, scale).sample()  # the guide's own z when its q is read from a trace
            z = torch.cat([dist.Normal(loc, scale).sample((k,)) for k in (3, 3, 1)])  # chunks of 3: (S, B, D)
            prior_loc, prior_scale = model.prior.net(c)
            out = model.decoder(torch.cat([z, c.expand(S, -1, -1)], -1))
            log_p = -math.log(K) + _normal_log_density(z, prior_loc, prior_scale) + model.likelihood(out).log_prob(x)
            elbo_k = (log_p - _normal_log_density(z, loc, scale)).mean(0)  # (B,)
            theirs += log_q_y[k].exp() * (elbo_k - log_q_y[k])
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), (ours, theirs)


def _hand_refine_step(lg, x, loc, scale, lr, eps):
    """One natural-gradient step of the documented refinement on the LG model, with the MC gradient written out:
    for z_s = mu + sigma eps_s, d log p(x, z)/dz = Wᵀ (x − W z − b) / s² − z, so
    g_mu = mean_s d/dz,  g_log_sigma = mean_s (d/dz · sigma eps_s) + 1  (the entropy's derivative),
    step = (sigma² g_mu, g_log_sigma / 2), clipped per row to norm REFINE_MAX_STEP / lr."""
    z = loc + scale * eps  # (S, B, D)
    dlogp = (x - z @ lg.W.T - lg.b) @ lg.W / lg.s**2 - z
    g_loc = dlogp.mean(0)
    g_log_scale = (dlogp * scale * eps).mean(0) + 1.0
    step_loc, step_log_scale = scale**2 * g_loc, 0.5 * g_log_scale
    norm = torch.cat([step_loc, step_log_scale], -1).norm(dim=-1, keepdim=True)
    shrink = torch.clamp(REFINE_MAX_STEP / (lr * norm), max=1.0)
    new_log_scale = (scale.log() + lr * shrink * step_log_scale).clamp(math.log(MIN_SCALE), 5.0)
    return loc + lr * shrink * step_loc, new_log_scale.exp(), (lr * norm > REFINE_MAX_STEP).squeeze(-1)


@pytest.mark.parametrize("lr", [0.01, 3.0], ids=["unclipped", "clipped"])
def test_one_refinement_step_is_the_hand_computed_natural_gradient_step(lr):
    """refine(steps = 1) moves each coordinate of (mu, log sigma) by exactly the hand-computed natural-gradient step
    from the same noise: sigma² scales the mean's step (scales 0.3 and 2 differ by 44x), 1/2 the log-scale's."""
    lg, x, exp = linear_gaussian_experiment("semi_amortized", 6)
    x = x[:6]
    loc = torch.tensor([[0.5, -1.0]], dtype=torch.float64).expand(6, 2) + 0.1 * torch.arange(6.0)[:, None]
    scale = torch.tensor([[0.3, 2.0]], dtype=torch.float64).expand(6, 2).clone()
    torch.manual_seed(3)
    new_loc, new_scale = refine(exp.model, x, None, loc, scale, 1, lr, "none")
    torch.manual_seed(3)
    eps = torch.randn(REFINE_SAMPLES, 6, 2, dtype=torch.float64)
    hand_loc, hand_scale, clipped = _hand_refine_step(lg, x, loc, scale, lr, eps)
    assert bool(clipped.all()) == (lr > 1.0) and bool(clipped.any()) == (lr > 1.0)
    assert torch.allclose(new_loc, hand_loc, rtol=1e-10, atol=1e-12), (new_loc, hand_loc)
    assert torch.allclose(new_scale, hand_scale, rtol=1e-10, atol=1e-12), (new_scale, hand_scale)
    # the step itself to 1e-13: unclipped, it is lr × the natural gradient with no shrink factor (not 1 − 1e-12 of it)
    assert torch.allclose(new_loc - loc, hand_loc - loc, rtol=1e-13, atol=0), (new_loc - loc, hand_loc - loc)
    assert ((new_loc - loc).sign() == (hand_loc - loc).sign()).all()  # direction per coordinate


def test_conditional_prior_density_is_the_normal_of_the_network_outputs():
    """log p(z | c) = Σ_d log N(z_d; loc_d(c), scale_d(c)²) with (loc, raw) the prior network's raw output halves and
    scale = softplus(raw) + 1e-4, written out."""
    torch.manual_seed(0)
    prior = ConditionalPrior(3, cond_dim=4, hidden=[5]).double()
    c = torch.randn(7, 4, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64)
    raw = prior.net.net(c)  # (7, 6)
    loc, raw_scale = raw[:, :3], raw[:, 3:]
    scale = torch.log1p(torch.exp(raw_scale)) + 1e-4
    assert (scale - 1).abs().min() > 1e-3  # a scale of 1 would not tell the learned scale from none
    assert torch.allclose(prior(c).log_prob(z), _normal_log_density(z, loc, scale), rtol=1e-12, atol=1e-12)


def conditional_prior_cvae(n=30, K=3):
    """A label CVAE that is a linear-Gaussian model with a learned p(z | c): prior network (made one linear layer) with
    loc(c) = A c, scale(c) = softplus(R c) + 1e-4, decoder W z + V c + b, Gaussian likelihood of scale s. With c the
    one-hot of class k: p(x | c) = N(W A_k + V_k + b, W diag(scale_k²) Wᵀ + s² I), and the exact posterior."""
    lg = orthogonal_linear_gaussian()
    g = torch.Generator().manual_seed(4)
    A = torch.randn(2, K, generator=g, dtype=torch.float64)
    sd = torch.tensor([[0.4, 1.7, 0.8], [2.2, 0.5, 1.2]], dtype=torch.float64)[:, :K]  # (D, K), far from 1
    V = torch.randn(lg.W.shape[0], K, generator=g, dtype=torch.float64)
    y = torch.arange(n) % K
    z = A.T[y] + sd.T[y] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = z @ lg.W.T + V.T[y] + lg.b + lg.s * torch.randn(n, lg.W.shape[0], generator=g, dtype=torch.float64)
    split = Split(x, y)
    cfg = tiny_config(
        data={"name": "linear_gaussian", "binarize": "none"},
        model={"name": "cvae", "condition": "label", "latent_dim": 2, "hidden": []},
        prior={"name": "conditional", "hidden": [4]},
        likelihood={"name": "gaussian", "scale": lg.s},
        train={"dtype": "float64"},
    )
    exp = Experiment.from_config(cfg, Dataset("linear_gaussian", split, split, split, None, K, False))
    with torch.no_grad():
        exp.model.decoder[0].weight.copy_(torch.cat([lg.W, V], dim=1))
        exp.model.decoder[0].bias.copy_(lg.b)
        head = exp.model.prior.net.net = torch.nn.Linear(K, 4, dtype=x.dtype)  # linear in c: any value per class
        head.weight.copy_(torch.cat([A, torch.log(torch.expm1(sd - 1e-4))], 0))
        head.bias.zero_()
    c = exp.condition.labels(y, x.dtype)
    mean = A.T[y] @ lg.W.T + V.T[y] + lg.b  # (N, P)
    cov = lg.W @ torch.diag_embed(sd.T[y] ** 2) @ lg.W.T + lg.s**2 * torch.eye(lg.W.shape[0], dtype=x.dtype)
    exact = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)  # (N,)
    post_cov = torch.linalg.inv(torch.diag_embed(sd.T[y] ** -2) + lg.W.T @ lg.W / lg.s**2)  # (N, D, D)
    post_loc = (post_cov @ ((x - V.T[y] - lg.b) @ lg.W / lg.s**2 + A.T[y] / sd.T[y] ** 2)[..., None])[..., 0]
    posterior = dist.MultivariateNormal(post_loc, covariance_matrix=post_cov)
    return exp, x, c, exact, posterior


def test_cvae_iwae_with_a_learned_conditional_prior_reaches_the_exact_log_px_given_c():
    """The exact posterior as proposal makes every log-weight log p(x | c): IWAE and ELBO equal the closed form to
    1e-9 for any K. With the prior p(z | c) as proposal (K = 20,000) IWAE is within 4 Monte-Carlo standard errors
    (delta method, per datapoint) of it, and the ELBO (K = 1 bound) is far below."""
    exp, x, c, exact, posterior = conditional_prior_cvae()
    torch.manual_seed(0)
    lp, elbo = estimates_from_q(exp.model, posterior, x, c, 5, 2)
    assert torch.allclose(lp, exact, atol=1e-9) and torch.allclose(elbo, exact, atol=1e-9)
    q = prior_proposal(exp.model, x, c)
    with torch.no_grad():
        z = q.sample((20000,))
        lw = exp.model.likelihood(exp.model.decoder(torch.cat([z, c.expand(20000, -1, -1)], -1))).log_prob(x)
        w = (lw - lw.max(0).values).exp()
        se = w.std(0) / w.mean(0) / math.sqrt(20000)  # (N,)
    torch.manual_seed(1)
    lp, elbo = estimates_from_q(exp.model, q, x, c, 20000, 5000)
    assert ((lp - exact).abs() < 4 * se + 1e-6).all(), (lp - exact, se)
    assert (elbo < exact - 0.1).all()
