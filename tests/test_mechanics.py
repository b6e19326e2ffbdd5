"""Mechanics that a mutation run (benchmarks/mutation.sh) showed unpinned: the Rényi objective's refusals, its
condition and its unsubsampled scale; the stream seeds' values; the refinement's gradient routing, its clamps
and its condition."""

import copy
import hashlib
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from helpers import linear_gaussian_experiment, make_elbo
from test_pinned_values import conditional_prior_cvae

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides import refine
from pyro_lvm.guides.local import MIN_SCALE
from pyro_lvm.infer.renyi import RenyiObjective
from pyro_lvm.seeding import stream_seed


@pytest.mark.parametrize("alpha", [1.0, math.inf, math.nan])
def test_renyi_refuses_alpha_without_a_bound_in_one_line(alpha):
    message = (
        f"elbo.alpha = {alpha} has no Rényi bound (alpha = 1 is the ELBO: use elbo.name = 'trace'); "
        "use alpha = 0 for IWAE"
    )
    with pytest.raises(PyroLVMError) as err:
        RenyiObjective(num_particles=2, alpha=alpha)
    assert str(err.value) == message


def test_renyi_takes_alpha_two_and_scores_without_subsampling():
    """α = 2 is a bound like any α ≠ 1; without num_data the loss is −Σ_b L_α(x_b) (scale 1), from the same draws."""
    _, x, exp = linear_gaussian_experiment("amortized", 6)
    elbo = RenyiObjective(num_particles=3, alpha=2.0)
    torch.manual_seed(0)
    loss = elbo.differentiable_loss(exp.model, exp.guide, x)
    torch.manual_seed(0)
    bound = elbo.per_datapoint(exp.model, exp.guide, x)
    assert torch.allclose(loss, -bound.sum(), rtol=1e-14)
    torch.manual_seed(0)
    assert elbo.loss(exp.model, exp.guide, x) == pytest.approx(float(loss.detach()), rel=1e-14)


def test_renyi_names_a_site_without_a_pathwise_gradient_and_a_model_without_sites():
    def model(x, c=None, **_):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("k", dist.Bernoulli(0.5 * torch.ones(x.shape[0])))

    def guide(x, c=None, **_):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("k", dist.Bernoulli(0.3 * torch.ones(x.shape[0])))

    x = torch.zeros(4, 2)
    with pytest.raises(PyroLVMError) as err:
        RenyiObjective(2).differentiable_loss(model, guide, x)
    assert str(err.value) == (
        "elbo.name = 'renyi' needs reparameterised guide sites; site 'k' is not (use elbo.name = 'trace')"
    )
    with pytest.raises(PyroLVMError) as err:
        RenyiObjective(2).differentiable_loss(lambda *a, **k: None, lambda *a, **k: None, x)
    assert str(err.value) == "elbo.name = 'renyi': the model has no sample sites to weight"


def test_renyi_passes_the_condition_to_model_and_guide():
    """A CVAE (conditional prior): with the exact posterior as guide every log-weight is the exact log p(x | c), so
    the bound is log p(x | c) for any K and α, and the loss is −Σ of it (no num_data: scale 1)."""
    exp, x, c, exact, posterior = conditional_prior_cvae(n=9)

    def guide(x, c_given=None, **_):
        assert c_given is not None and torch.equal(c_given, c)  # the guide is handed the condition
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", posterior)

    for vectorize in (True, False):
        elbo = make_elbo("renyi", "off", num_particles=3, alpha=0.5, vectorize_particles=vectorize)
        bound = elbo.per_datapoint(exp.model, guide, x, c)
        assert torch.allclose(bound, exact, atol=1e-9)
        assert torch.allclose(elbo.differentiable_loss(exp.model, guide, x, c), -exact.sum(), atol=1e-8)


def test_renyi_defaults_and_keyword_plumbing():
    """Defaults: one particle, vectorised, β = 1; ``loss`` and the per-datapoint guide get idx and num_data."""
    objective = RenyiObjective()
    assert (objective.num_particles, objective.vectorize_particles, objective.alpha) == (1, True, 0.0)
    _, x, exp = linear_gaussian_experiment("per_datapoint", 12)
    idx = torch.tensor([2, 5, 7])
    elbo = RenyiObjective(num_particles=4)
    values = []
    for kwargs in ({}, {"beta": 1.0}):
        torch.manual_seed(6)
        values.append(elbo.log_weights(exp.model, exp.guide, x[idx], idx=idx, num_data=12, **kwargs))
    assert torch.equal(values[0], values[1])
    torch.manual_seed(6)
    loss = elbo.loss(exp.model, exp.guide, x[idx], idx=idx, num_data=12)
    torch.manual_seed(6)
    assert loss == float(elbo.differentiable_loss(exp.model, exp.guide, x[idx], idx=idx, num_data=12).detach())


def test_stream_seeds_are_the_documented_hash():
    """stream_seed(seed, *keys) = (blake2b-64 of "pyro_lvm/seed/key..." read little-endian) >> 1: values are part of
    the reproducibility contract (evaluations record them implicitly), so they are pinned."""
    for seed, keys in [(1, ("eval", 0)), (7, (3, 2)), (0, ())]:
        text = "/".join(map(str, ("pyro_lvm", seed, *keys))).encode()
        expected = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1
        assert stream_seed(seed, *keys) == expected
    assert stream_seed(1, "eval", 0) == 2975252179044037580  # a recorded value: changing the hash changes streams


def _lg_refine_inputs(n=5):
    lg, x, exp = linear_gaussian_experiment("semi_amortized", n)
    loc0 = torch.tensor([[0.5, -1.0]], dtype=torch.float64).repeat(n, 1).requires_grad_()
    scale0 = torch.tensor([[0.3, 2.0]], dtype=torch.float64).repeat(n, 1).requires_grad_()
    return exp, x[:n], loc0, scale0


def _grad_of_refined(exp, x, loc0, scale0, steps, backprop):
    torch.manual_seed(1)
    loc, scale = refine(exp.model, x, None, loc0, scale0, steps, 0.05, backprop)
    return torch.autograd.grad(loc.sum(), (loc0, scale0))


def test_refinement_routes_gradients_through_the_steps_it_says():
    """'all': d(refined mean)/d(start) through every step (differs from the one-step derivative); 'first': exactly
    the derivative of the first step (later steps are a constant shift); 'none': constants."""
    exp, x, loc0, scale0 = _lg_refine_inputs()
    one_step = _grad_of_refined(exp, x, loc0, scale0, 1, "all")
    first = _grad_of_refined(exp, x, loc0, scale0, 3, "first")
    every = _grad_of_refined(exp, x, loc0, scale0, 3, "all")
    for a, b in zip(first, one_step, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(every[0], one_step[0], rtol=1e-6)
    assert not torch.allclose(one_step[0], torch.ones_like(loc0))  # the step depends on where it starts
    torch.manual_seed(1)
    loc, scale = refine(exp.model, x, None, loc0, scale0, 3, 0.05, "none")
    assert not loc.requires_grad and not scale.requires_grad


def test_refinement_of_constants_and_zero_steps():
    """Encoder outputs without a graph (evaluation) refine to the same values under every backprop setting and
    stay without one (refine makes its own leaves); zero steps return the start."""
    exp, x, loc0, scale0 = _lg_refine_inputs()
    loc0, scale0 = loc0.detach(), scale0.detach()
    results = {}
    for backprop in ("none", "first", "all"):
        torch.manual_seed(2)
        results[backprop] = refine(exp.model, x, None, loc0, scale0, 2, 0.05, backprop)
    for backprop in ("first", "all"):
        for a, b in zip(results[backprop], results["none"], strict=True):
            assert torch.equal(a.detach(), b)
    assert not loc0.requires_grad and not scale0.requires_grad
    for backprop in ("none", "first", "all"):
        loc, scale = refine(exp.model, x, None, loc0, scale0, 0, 0.05, backprop)
        assert torch.equal(loc.detach(), loc0) and torch.allclose(scale.detach(), scale0, rtol=1e-15)


def _prior_only_model(sd: float):
    """z ~ N(0, sd² I) per row and nothing observed: the local ELBO's optimum is q = the prior."""

    def model(x, c=None, **_):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x[:, :2]), sd).to_event(1))

    return model


@pytest.mark.parametrize("sd, start, bound", [(1e-9, 1.5e-4, MIN_SCALE), (math.exp(12), math.exp(4.9), math.exp(5))])
def test_refinement_clamps_the_scale(sd, start, bound):
    """A target far below 1e-4 (or far above e⁵) pulls log sigma past its clamp in one clipped step: the scale
    stops at MIN_SCALE (or e⁵)."""
    x = torch.zeros(3, 2, dtype=torch.float64)
    loc = torch.zeros(3, 2, dtype=torch.float64)
    scale = torch.full((3, 2), start, dtype=torch.float64)
    _, new_scale = refine(_prior_only_model(sd), x, None, loc, scale, 3, 1.0, "none")
    assert torch.allclose(new_scale, torch.full_like(new_scale, bound), rtol=1e-12)


def test_refinement_passes_the_condition():
    """On a CVAE whose prior needs c, refinement runs (the model is traced with c) and moves q."""
    exp, x, c, _, posterior = conditional_prior_cvae(n=6)
    loc, scale = torch.zeros(6, 2, dtype=torch.float64), torch.ones(6, 2, dtype=torch.float64)
    torch.manual_seed(0)
    new_loc, _ = refine(exp.model, x, c, loc, scale, 20, 0.1, "none")
    assert (new_loc - posterior.loc).norm() < 0.5 * (loc - posterior.loc).norm()


def _dense_and_sparse(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2).double(), torch.nn.Embedding(6, 2, sparse=True).double()


def _one_step(opts, dense, table, scale=100.0):
    opts.zero_grad()
    x = torch.ones(4, 3, dtype=torch.float64)
    (scale * dense(x).sum() + table(torch.tensor([1, 4])).sum()).backward()
    opts.step()


def test_optimizers_clip_the_dense_gradient_and_zero_to_none():
    """optim.clip_norm rescales the dense parameters' gradient to that norm before the step (the sparse table's is
    left alone); zero_grad leaves no gradient tensor behind."""
    from pyro_lvm.infer.optim import adam

    dense, table = _dense_and_sparse()
    opts = adam([dense, table], lr=1e-3, local_lr=1e-2, clip_norm=0.5)
    _one_step(opts, dense, table)
    norm = torch.cat([p.grad.flatten() for p in dense.parameters()]).norm()
    assert abs(float(norm) - 0.5) < 1e-6  # torch divides by (norm + 1e-6)
    assert torch.equal(table.weight.grad.coalesce().values(), torch.ones(2, 2, dtype=torch.float64))
    opts.zero_grad()
    assert all(p.grad is None for p in [*dense.parameters(), table.weight])


def test_optimizers_state_round_trip_keeps_the_configured_kernel():
    """state_dict holds both optimisers; loading it into fresh ones continues the same trajectory (per-row step
    counts included), and the dense optimiser keeps its own ``fused`` setting, not the checkpoint's."""
    from pyro_lvm.infer.optim import adam

    dense, table = _dense_and_sparse()
    first = adam([dense, table], fused=True)
    for _ in range(3):
        _one_step(first, dense, table)
    state = first.state_dict()
    assert set(state) == {"dense", "sparse"} and state["sparse"]["state"]
    copy_dense, copy_table = _dense_and_sparse()
    copy_dense.load_state_dict(dense.state_dict())
    copy_table.load_state_dict(table.state_dict())
    again = adam([copy_dense, copy_table], fused=False)
    again.load_state_dict(copy.deepcopy(state))  # as from disk: no state tensor shared between the two
    assert [g.get("fused") for g in again.dense.param_groups] == [None]
    reference = adam([dense, table], fused=False)
    reference.load_state_dict(copy.deepcopy(state))
    for opts, (d, t) in ((reference, (dense, table)), (again, (copy_dense, copy_table))):
        _one_step(opts, d, t)
    assert torch.equal(copy_table.weight, table.weight)
    assert torch.equal(reference.sparse.state[table.weight]["step"], again.sparse.state[copy_table.weight]["step"])
    for a, b in zip(dense.parameters(), copy_dense.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_fused_optimiser_keeps_its_kernel_when_loading_a_loop_state():
    """The other direction: a loop Adam's state loaded into a fused one keeps ``fused`` on and steps with it."""
    from pyro_lvm.infer.optim import adam

    dense, table = _dense_and_sparse()
    loop = adam([dense, table], fused=False)
    _one_step(loop, dense, table)
    fused = adam([dense, table], fused=True)
    fused.load_state_dict(copy.deepcopy(loop.state_dict()))
    assert [g.get("fused") for g in fused.dense.param_groups] == [True]
    _one_step(fused, dense, table)
    assert all(torch.isfinite(p).all() for p in dense.parameters())


def test_conditional_prior_builds_the_configured_network_and_refuses_in_one_line():
    from pyro_lvm.models.priors import ConditionalPrior

    prior = ConditionalPrior(3, cond_dim=1, hidden=[5])  # a one-class condition is a condition
    assert [m.out_features for m in prior.net.modules() if isinstance(m, torch.nn.Linear)] == [5, 6]
    with pytest.raises(PyroLVMError) as err:
        ConditionalPrior(3, cond_dim=0)
    assert str(err.value) == "prior 'conditional' needs a condition: use it with model.name = 'cvae'"
    with pytest.raises(PyroLVMError) as err:
        prior(None)
    assert str(err.value) == "prior 'conditional' was called without a condition c"


def test_optimizers_describe_themselves_and_a_sparse_only_state():
    """The description runs record; a model with only a sparse table has no dense state; RowAdam's default lr."""
    from pyro_lvm.infer.optim import RowAdam, adam

    dense, table = _dense_and_sparse()
    assert adam([dense, table]).description == "Adam (dense), RowAdam (row-wise, per-row step counts)"
    assert adam([dense], fused=True).description == "Adam (dense, fused)"
    sparse_only = adam([table])
    assert sparse_only.description == "RowAdam (row-wise, per-row step counts)"
    assert sparse_only.state_dict()["dense"] is None
    assert RowAdam(table.parameters()).defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
