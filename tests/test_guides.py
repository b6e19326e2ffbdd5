"""Per-datapoint and semi-amortized guides: exactness on the analytic model, O(batch) updates, bad input."""

import pytest
import torch
from helpers import linear_gaussian_experiment, tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import batch_estimates
from pyro_lvm.evaluation.local_inference import fit_local
from pyro_lvm.guides import local_elbo, refine
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.training.experiment import Experiment


def lg_experiment(guide: str, n=20, **guide_kw):
    lg, x, exp = linear_gaussian_experiment(
        guide,
        n,
        guide=guide_kw,
        elbo={"num_particles": 16},
        optim={"lr": 0.02, "local_lr": 0.05},
        train={"batch_size": n},
    )
    exp.model.decoder.requires_grad_(False)  # the decoder is the true one: only the guide learns
    return lg, x, exp


def test_per_datapoint_guide_reaches_exact_posterior():
    lg, x, exp = lg_experiment("per_datapoint")
    idx = torch.arange(len(x))
    for step in range(2000):
        if step in (1000, 1500):  # anneal the step so the final iterate settles (Adam's noise is ~ lr)
            exp.optim.sparse.param_groups[0]["lr"] /= 10
        exp.optim.zero_grad()
        loss_and_backward(exp.elbo, exp.model, exp.guide, x, None, idx=idx, num_data=len(x))
        exp.optim.step()
    loc, scale = exp.guide.local_params(idx)
    true_loc, cov = lg.posterior(x)
    assert (loc - true_loc).abs().max() < 0.05
    assert ((scale**2 / cov.diagonal()) - 1).abs().max() < 0.10
    # the Gaussian family contains the posterior: IWAE with this q matches the exact log p(x)
    lp, elbo = batch_estimates(exp.model, exp.guide, x, None, idx, len(x), num_samples=2000, chunk_size=500)
    exact = lg.log_evidence(x)
    assert (lp - exact).abs().max() < 0.01
    assert ((lp - elbo).mean()) < 0.01  # approximation gap ≈ 0


def test_fit_local_reaches_exact_posterior_from_zero():
    lg, x, exp = lg_experiment("amortized")
    zeros = torch.zeros(len(x), 2, dtype=torch.float64)
    fit = fit_local(exp.model, x, None, zeros, torch.ones_like(zeros), lr=0.02, max_steps=4000, tol=1e-4)
    true_loc, cov = lg.posterior(x)
    assert (fit.loc - true_loc).abs().max() < 0.05
    assert ((fit.scale**2 / cov.diagonal()) - 1).abs().max() < 0.10


def test_untouched_rows_stay_bit_identical():
    exp = Experiment.from_config(tiny_config(guide={"name": "per_datapoint"}))
    before = exp.guide.loc.weight.detach().clone(), exp.guide.raw_scale.weight.detach().clone()
    batches = [torch.tensor([0, 5, 9]), torch.tensor([5, 17, 30])]
    for idx in batches:
        x = exp.data.train.x[idx]
        exp.optim.zero_grad()
        loss_and_backward(exp.elbo, exp.model, exp.guide, x, None, idx=idx, num_data=len(exp.data.train))
        exp.optim.step()
    touched = torch.zeros(len(exp.data.train), dtype=torch.bool)
    touched[torch.cat(batches)] = True
    for table, old in zip((exp.guide.loc.weight, exp.guide.raw_scale.weight), before, strict=True):
        assert torch.equal(table[~touched], old[~touched])
        assert not torch.equal(table[touched], old[touched])
    assert exp.guide.loc.weight.grad is None or exp.guide.loc.weight.grad.is_sparse


def test_per_datapoint_bad_input():
    exp = Experiment.from_config(tiny_config(guide={"name": "per_datapoint"}))
    n = len(exp.data.train)
    x = exp.data.train.x[:4]
    with pytest.raises(PyroLVMError, match="needs dataset indices"):
        exp.guide(x)
    with pytest.raises(PyroLVMError, match="larger than the dataset"):
        exp.model(exp.data.train.x[:4], idx=torch.arange(4), num_data=3)
    with pytest.raises(PyroLVMError, match=f"holds {n} rows but num_data=5000"):
        exp.guide(x, idx=torch.arange(4), num_data=5000)
    with pytest.raises(PyroLVMError, match="out of range"):
        exp.guide(x, idx=torch.tensor([0, 1, 2, n + 3]))


@pytest.mark.parametrize("backprop", ["none", "first", "all"])
def test_refinement_improves_the_local_elbo_and_routes_gradients(backprop):
    lg, x, exp = lg_experiment("semi_amortized", refine_steps=5, refine_lr=0.05, refine_backprop=backprop)
    loc, scale = exp.guide.encode(x)
    torch.manual_seed(0)
    start = local_elbo(exp.model, x, None, loc.detach(), scale.detach(), 2000).mean()
    new_loc, new_scale = refine(exp.model, x, None, loc, scale, 5, 0.05, backprop)
    torch.manual_seed(0)
    end = local_elbo(exp.model, x, None, new_loc.detach(), new_scale.detach(), 2000).mean()
    assert end > start
    assert new_loc.requires_grad == (backprop != "none")
