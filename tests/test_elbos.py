"""JIT ELBO variants: equal loss and gradients to the plain ELBO, one compiled function, safe fallbacks."""

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.elbos import ELBOS
from pyro_lvm.experiment import Experiment

PLAIN = {"jit_trace": "trace", "jit_mean_field": "mean_field"}


def _loss_and_grads(exp, elbo, x, idx, seed):
    for p in [*exp.model.parameters(), *exp.guide.parameters()]:
        p.grad = None
    torch.manual_seed(seed)
    loss = elbo.differentiable_loss(exp.model, exp.guide, x, None, idx=idx, num_data=200, beta=0.5)
    loss.backward()
    grads = [p.grad.clone() for p in [*exp.model.parameters(), *exp.guide.parameters()] if p.grad is not None]
    return loss.detach(), grads


@pytest.mark.parametrize("name", sorted(PLAIN))
@pytest.mark.parametrize("particles", [1, 3])
def test_jit_equals_plain_loss_and_gradients(name, particles):
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    x, idx = exp.data.train.x[:32], torch.arange(32)
    jit = ELBOS.build(name, num_particles=particles)
    plain = ELBOS.build(PLAIN[name], num_particles=particles)
    _loss_and_grads(exp, jit, x, idx, seed=0)  # the first call traces
    for seed in (1, 2):
        lj, gj = _loss_and_grads(exp, jit, x, idx, seed)
        lp, gp = _loss_and_grads(exp, plain, x, idx, seed)
        assert jit.failure is None
        assert torch.allclose(lj, lp, rtol=1e-5), (lj, lp)
        assert len(gj) == len(gp) > 0
        for a, b in zip(gj, gp, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_jit_mean_field_compiles_once():
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    x, idx = exp.data.train.x[:32], torch.arange(32)
    elbo = ELBOS.build("jit_mean_field")
    _loss_and_grads(exp, elbo, x, idx, 0)
    compiled = elbo.jit._differentiable_loss
    for seed in (1, 2, 3):
        _loss_and_grads(exp, elbo, x, idx, seed)
    assert elbo.jit._differentiable_loss is compiled and len(compiled.compiled) == 1


def test_jit_falls_back_on_a_new_shape_and_on_dynamic_guides():
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    elbo = ELBOS.build("jit_trace")
    x = exp.data.train.x
    _loss_and_grads(exp, elbo, x[:32], torch.arange(32), 0)
    with pytest.warns(UserWarning, match="differs from the traced one"):
        lj, _ = _loss_and_grads(exp, elbo, x[:7], torch.arange(7), 1)  # an irregular last batch
    lp, _ = _loss_and_grads(exp, ELBOS.build("trace"), x[:7], torch.arange(7), 1)
    assert torch.equal(lj, lp)

    semi = Experiment.from_config(tiny_config(guide={"name": "semi_amortized"}, train={"pyro_validation": False}))
    elbo = ELBOS.build("jit_trace")
    with pytest.warns(UserWarning, match="tracing failed"):
        lj, _ = _loss_and_grads(semi, elbo, x[:16], torch.arange(16), 0)
    lp, _ = _loss_and_grads(semi, ELBOS.build("trace"), x[:16], torch.arange(16), 0)
    assert elbo.failure is not None and torch.equal(lj, lp)
