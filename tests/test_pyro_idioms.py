"""Plain Pyro on our programs, written as a user would: Predictive for prior and posterior predictive draws of the
site "x", pyro.infer.SVI with ``pyro_lvm.row_adam`` for every built-in guide, and (inside ``pyro_lvm.scope()``) an
ELBO module with one torch optimiser. No library call wraps these: the fixture below does not enter ``scope()``."""

from __future__ import annotations

import pyro
import pytest
import torch
from helpers import linear_gaussian_experiment, tiny_config
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO

import pyro_lvm
from pyro_lvm.infer.optim import RowAdam

GUIDES = ["amortized", "per_datapoint", "semi_amortized", "amortized_flow", "m2"]
M2 = {"model": {"name": "m2"}, "prior": {"name": "conditional"}}  # the m2 guide's model (y latent: sampled by q(y|x))
Z_MAX = 4.5  # |z-score| bound for dozens of seeded Monte-Carlo checks (P(|N(0,1)| > 4.5) ≈ 7e-6 each)


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Overrides the suite's fixture: Pyro's own global settings, as in a user's script (no ``scope()``)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield


def test_prior_predictive_draws_x_from_the_linear_gaussian_marginal():
    lg, _, exp = linear_gaussian_experiment("amortized", 20)
    draws = Predictive(exp.model, num_samples=2000, parallel=True)(batch_size=4)["x"]  # (S, B, P)
    assert draws.shape == (2000, 4, 5)
    flat = draws.reshape(-1, 5)
    cov = lg.W @ lg.W.T + lg.s**2 * torch.eye(5, dtype=torch.float64)  # p(x) = N(b, W Wᵀ + s² I)
    z = (flat.mean(0) - lg.b) / (cov.diagonal() / len(flat)).sqrt()
    assert z.abs().max() < Z_MAX


def test_predictive_without_data_or_batch_size_names_the_fix():
    exp = pyro_lvm.Experiment.from_config(tiny_config())
    with pytest.raises(pyro_lvm.PyroLVMError, match="batch_size"):
        Predictive(exp.model, num_samples=2)(None)


@pytest.mark.parametrize("guide_name", ["amortized", "per_datapoint"])
@pytest.mark.parametrize("unconditioned", [False, True])
def test_posterior_predictive_draws_x_around_the_decoded_guide(guide_name, unconditioned):
    """E[x̃ | x] = W loc_q + b and Var = (W²) scale_q² + s² per coordinate, for q the guide's Gaussian."""
    lg, x, exp = linear_gaussian_experiment(guide_name, 6)
    idx, n = torch.arange(6), len(x)
    if guide_name == "per_datapoint":  # rows away from the guide's start, so the test sees the guide's values
        with torch.no_grad():
            exp.guide.loc.weight.normal_()
        loc, scale = exp.guide.local_params(idx)
    else:
        loc, scale = exp.guide.encode(x)
    if unconditioned:  # Pyro's own idiom: every observed site of the model drawn instead
        predictive = Predictive(poutine.uncondition(exp.model), guide=exp.guide, num_samples=3000, parallel=True)
        draws = predictive(x, idx=idx, num_data=n)["x"]
    else:
        draws = Predictive(exp.model, guide=exp.guide, num_samples=3000, parallel=True)(
            x, idx=idx, num_data=n, observe=False
        )["x"]
    assert draws.shape == (3000, 6, 5) and not torch.equal(draws[0], x)
    with torch.no_grad():
        mean = loc @ lg.W.T + lg.b
        var = scale**2 @ (lg.W**2).T + lg.s**2
    z = (draws.mean(0) - mean) / (var / len(draws)).sqrt()
    assert z.abs().max() < Z_MAX


def test_predictive_with_a_guide_and_observed_x_returns_x_as_pyro_does():
    _, x, exp = linear_gaussian_experiment("amortized", 4)
    assert torch.equal(Predictive(exp.model, guide=exp.guide, num_samples=2)(x)["x"][1], x)


def test_per_datapoint_posterior_predictive_needs_no_x():
    _, x, exp = linear_gaussian_experiment("per_datapoint", 4)
    draws = Predictive(exp.model, guide=exp.guide, num_samples=3)(None, idx=torch.arange(4), num_data=4)["x"]
    assert draws.shape == (3, 4, 5)


def test_an_amortized_guide_refuses_x_none_with_the_fix():
    _, _, exp = linear_gaussian_experiment("amortized", 4)
    with pytest.raises(pyro_lvm.PyroLVMError, match="observe=False"):
        Predictive(exp.model, guide=exp.guide, num_samples=2)(None, batch_size=4)


def _mean_loss(elbo, model, guide, x, **kw) -> float:
    with torch.no_grad():
        return sum(elbo.loss(model, guide, x, **kw) for _ in range(20)) / 20


@pytest.mark.parametrize("guide_name", GUIDES)
def test_plain_svi_with_row_adam_trains_every_guide(guide_name):
    sections = M2 if guide_name == "m2" else {}
    exp = pyro_lvm.Experiment.from_config(tiny_config(guide={"name": guide_name}, **sections))
    model, guide = exp.model, exp.guide
    x, kw = exp.data.train.x[:64], dict(idx=torch.arange(64), num_data=len(exp.data.train))
    elbo = Trace_ELBO()
    before = _mean_loss(elbo, model, guide, x, **kw)
    svi = SVI(model, guide, pyro_lvm.row_adam({"lr": 1e-2}), elbo)
    for _ in range(40):
        svi.step(x, **kw)
    # 40 steps of lr 1e-2 move the loss by thousands of nats; the 20-draw means are within a few tens of nats
    assert _mean_loss(elbo, model, guide, x, **kw) < before - 100


def test_pyro_adam_refuses_the_sparse_table_that_row_adam_takes():
    exp = pyro_lvm.Experiment.from_config(tiny_config(guide={"name": "per_datapoint"}))
    x, kw = exp.data.train.x[:8], dict(idx=torch.arange(8), num_data=len(exp.data.train))
    with pytest.raises(RuntimeError, match="sparse"):
        SVI(exp.model, exp.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x, **kw)


def test_lazy_adam_is_torch_adam_on_dense_tensors_and_row_adam_on_sparse_rows():
    torch.manual_seed(0)
    dense = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64)]
    dense[1].requires_grad_()
    twins = [p.detach().clone().requires_grad_() for p in dense]
    table, table_twin = (torch.nn.Embedding(10, 2, sparse=True).double() for _ in range(2))
    table_twin.load_state_dict(table.state_dict())
    lazy = pyro_lvm.LazyAdam([*dense, table.weight], lr=0.1)
    adam, rows = torch.optim.Adam(twins, lr=0.1), RowAdam([table_twin.weight], lr=0.1)
    for step in range(5):
        idx = torch.tensor([step, step + 1, 7])
        for params, emb, opts in ((dense, table, [lazy]), (twins, table_twin, [adam, rows])):
            loss = (params[0].sin().sum() + (params[1] ** 2).sum() + emb(idx).pow(3).sum()) * (step + 1)
            loss.backward()
            for opt in opts:
                opt.step()
                opt.zero_grad()
    for a, b in zip([*dense, table.weight], [*twins, table_twin.weight], strict=True):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)  # the same arithmetic, to float64 rounding


def test_plain_svi_inside_scope_fails_and_the_documented_elbo_module_trains():
    """Inside scope() Pyro's SVI cannot collect the parameters (module-local parameters are plain nn.Parameters,
    without the ``.unconstrained`` that SVI's param capture calls); the ELBO module with one torch optimiser can."""
    exp = pyro_lvm.Experiment.from_config(tiny_config(guide={"name": "per_datapoint"}))
    x, kw = exp.data.train.x[:64], dict(idx=torch.arange(64), num_data=len(exp.data.train))
    with pyro_lvm.scope():
        with pytest.raises(AttributeError, match="unconstrained"):
            SVI(exp.model, exp.guide, pyro_lvm.row_adam({"lr": 1e-2}), Trace_ELBO()).step(x, **kw)
        loss_fn = Trace_ELBO()(exp.model, exp.guide)  # an nn.Module holding model and guide
        optimiser = pyro_lvm.LazyAdam(loss_fn.parameters(), lr=1e-2)
        before = _mean_loss(Trace_ELBO(), exp.model, exp.guide, x, **kw)
        for _ in range(40):
            optimiser.zero_grad()
            loss_fn(x, **kw).backward()
            optimiser.step()
        assert _mean_loss(Trace_ELBO(), exp.model, exp.guide, x, **kw) < before - 100
