"""Second, independent checks of formulas that one other test alone used to guard: the ELBO's divisor in the
importance-sampled estimates, β on the guide's ``z`` site, and the per-datapoint guide's scale transform. Each
is written out by hand on the linear-Gaussian model (float64)."""

import math

import pyro
import torch
from helpers import linear_gaussian_experiment, scaled_posterior
from pyro import poutine

from pyro_lvm.evaluation.estimates import estimates_from_q
from pyro_lvm.guides.local import MIN_SCALE

LOG_2PI = math.log(2 * math.pi)


def _normal_log_density(value, loc, scale):
    """Σ over the last dim of log N(value; loc, scale²), written out."""
    scale = torch.as_tensor(scale, dtype=value.dtype)
    return (-0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def _lg_log_joint(lg, x, z):
    """log N(x; W z + b, s² I) + log N(z; 0, I), (..., B)."""
    return _normal_log_density(x, z @ lg.W.T + lg.b, lg.s) + _normal_log_density(z, torch.zeros_like(z), 1.0)


def test_iwae_and_elbo_are_the_hand_written_reductions_of_the_same_log_weights():
    """K = 7 draws in chunks of 3 (3 + 3 + 1): log p̂ = logsumexp_k log w_k − log 7 and ELBO = Σ_k log w_k / 7, with
    log w written out on the LG model; and at K = 1 both are the one log-weight, equal to each other."""
    lg, x, exp = linear_gaussian_experiment("amortized", 8)
    q = scaled_posterior(lg, x, 1.5)
    torch.manual_seed(2)
    lp, elbo = estimates_from_q(exp.model, q, x, None, 7, 3)
    torch.manual_seed(2)
    z = torch.cat([q.sample((k,)) for k in (3, 3, 1)])  # (7, B, D)
    lw = _lg_log_joint(lg, x, z) - _normal_log_density(z, q.base_dist.loc, q.base_dist.scale)
    assert torch.allclose(lp, torch.logsumexp(lw, 0) - math.log(7), rtol=1e-12, atol=1e-10)
    assert torch.allclose(elbo, lw.sum(0) / 7, rtol=1e-12, atol=1e-10)
    torch.manual_seed(3)
    lp1, elbo1 = estimates_from_q(exp.model, q, x, None, 1, 1)
    assert torch.allclose(lp1, elbo1, rtol=1e-14, atol=1e-12)


def test_trace_elbo_weights_the_guide_z_term_by_beta():
    """Trace_ELBO at β = 0.3 with one particle is −(N/B) Σ_b [log p(x_b | z_b) + β (log p(z_b) − log q(z_b | x_b))]
    from the guide's own draw z = loc + scale ε; without β on the guide's z site the −log q term would be whole."""
    lg, x, exp = linear_gaussian_experiment("amortized", 12)
    idx = torch.tensor([0, 3, 5, 9])
    beta = 0.3
    torch.manual_seed(4)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(
        exp.model, exp.guide, x[idx], None, idx=idx, num_data=12, beta=beta
    )
    with torch.no_grad():
        loc, scale = exp.guide.encode(x[idx])
        torch.manual_seed(4)
        z = torch.distributions.Normal(loc, scale).rsample()
        log_lik = _normal_log_density(x[idx], z @ lg.W.T + lg.b, lg.s)
        kl_term = _normal_log_density(z, torch.zeros_like(z), 1.0) - _normal_log_density(z, loc, scale)
        expected = -(12 / 4) * (log_lik + beta * kl_term).sum()
    assert abs(loss.item() - expected.item()) < 1e-10 * abs(expected.item()), (loss, expected)
    guide_trace = poutine.trace(exp.guide).get_trace(x[idx], None, idx=idx, num_data=12, beta=beta)
    assert abs(guide_trace.nodes["z"]["scale"] - 12 / 4 * beta) < 1e-12  # the plate's N/B times β


def test_per_datapoint_scale_is_softplus_of_the_raw_row_plus_the_floor():
    """The z site of the per-datapoint guide is N(mu_n, diag (log(1 + exp(rho_n)) + MIN_SCALE)²) for the rows n
    of the batch, with rho_n raw table values from −30 (scale at the floor) to 3."""
    _, x, exp = linear_gaussian_experiment("per_datapoint", 10)
    raw = torch.linspace(-30.0, 3.0, 20, dtype=torch.float64).reshape(10, 2)
    with torch.no_grad():
        exp.guide.raw_scale.weight.copy_(raw)
        exp.guide.loc.weight.copy_(torch.randn(10, 2, dtype=torch.float64))
    idx = torch.tensor([0, 4, 9])
    q = poutine.trace(exp.guide).get_trace(x[idx], None, idx=idx, num_data=10).nodes["z"]["fn"]
    expected = torch.log1p(torch.exp(raw[idx])) + MIN_SCALE
    assert torch.allclose(q.base_dist.scale, expected, rtol=1e-12, atol=0)
    assert torch.equal(q.base_dist.loc, exp.guide.loc.weight[idx])
    assert abs(float(q.base_dist.scale[0, 0].detach()) - MIN_SCALE) < 1e-12  # softplus(−30) ≈ 1e-13: the floor holds


def test_evaluate_split_with_an_exact_proposal_gives_the_exact_log_px_given_c():
    """evaluate_split over several batches (one stream, or one per batch) with the exact posterior of a CVAE with a
    learned conditional prior as proposal: every row's IWAE and ELBO are log p(x | c), and num_points rows come."""
    from test_pinned_values import conditional_prior_cvae

    from pyro_lvm.evaluation.estimates import evaluate_split

    exp, x, _, exact, posterior = conditional_prior_cvae(n=30)

    def exact_proposal(model, target, c):
        rows = (target[:, None, :] == x[None]).all(-1).to(torch.int64).argmax(1)  # the split's rows, in order
        return pyro.distributions.MultivariateNormal(posterior.loc[rows], scale_tril=posterior.scale_tril[rows])

    for per_batch in (False, True):
        out = evaluate_split(
            exp.model,
            exp.guide,
            exp.data.test,
            exp.condition,
            4,
            3,
            7,
            20,
            proposal=exact_proposal,
            per_batch_streams=per_batch,
        )
        assert torch.allclose(out["log_px"].values, exact[:20], atol=1e-9)
        assert torch.allclose(out["elbo"].values, exact[:20], atol=1e-9)


def test_particle_bytes_counts_pixels_and_decoder_widths():
    """4 × (P + Σ decoder out_features) × bytes per float: the memory check's unit (float64 here)."""
    from pyro_lvm.evaluation.estimates import particle_bytes

    _, x, exp = linear_gaussian_experiment("amortized", 4)
    assert particle_bytes(exp.model, x) == 4 * (5 + 5) * 8
    assert particle_bytes(object(), x) == 4 * 5 * 8
    assert particle_bytes(exp.model, x.float()) == 4 * (5 + 5) * 4


def test_validation_of_m2_is_the_label_summed_bound():
    from test_m2 import m2_experiment

    from pyro_lvm.evaluation.labels import label_validation_elbo

    exp = m2_experiment()
    assert exp.recipe.validation(exp) is label_validation_elbo  # the recipe of the semi-supervised kind chooses it
    assert exp.recipe.validation(exp)(exp) == label_validation_elbo(exp)
