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


def test_jit_draws_what_plain_draws_for_every_batch_shape():
    """Tracing (also of the irregular last batch) leaves the random stream as a plain step would: a JIT run and
    a plain run from the same seed give the same losses, so resume stays exact."""
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    x = exp.data.train.x
    losses, elbos = {}, {name: ELBOS.build(name) for name in ("jit_trace", "trace")}
    for name, elbo in elbos.items():
        torch.manual_seed(0)
        losses[name] = [
            elbo.differentiable_loss(exp.model, exp.guide, x[:b], None, idx=torch.arange(b), num_data=200).item()
            for b in (32, 32, 7, 32, 7)
        ]
    assert losses["jit_trace"] == pytest.approx(losses["trace"], rel=1e-5)
    assert len(elbos["jit_trace"]._fns) == 2 and elbos["jit_trace"].failure is None  # one per batch shape


def test_jit_falls_back_on_dynamic_guides():
    x = Experiment.from_config(tiny_config()).data.train.x

    semi = Experiment.from_config(tiny_config(guide={"name": "semi_amortized"}, train={"pyro_validation": False}))
    elbo = ELBOS.build("jit_trace")
    with pytest.warns(UserWarning, match="tracing failed"):
        lj, _ = _loss_and_grads(semi, elbo, x[:16], torch.arange(16), 0)
    lp, _ = _loss_and_grads(semi, ELBOS.build("trace"), x[:16], torch.arange(16), 0)
    assert elbo.failure is not None and torch.equal(lj, lp)


def test_fast_bernoulli_equals_torch_bernoulli():
    import pyro.distributions as dist

    from pyro_lvm.likelihoods import BernoulliLogits

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)  # (K, B, P)
    for x in (torch.bernoulli(torch.full((5, 7), 0.4, dtype=torch.float64)), torch.rand(5, 7, dtype=torch.float64)):
        ours = BernoulliLogits(logits).log_prob(x)
        ref = dist.Bernoulli(logits=logits, validate_args=False).to_event(1).log_prob(x)
        assert ours.shape == (3, 5) and torch.allclose(ours, ref, atol=1e-12)
        (g1,) = torch.autograd.grad(ours.sum(), logits)
        (g2,) = torch.autograd.grad(ref.sum(), logits)
        assert torch.allclose(g1, g2, atol=1e-12)


@pytest.mark.parametrize(
    "sections",
    [
        {"guide": {"name": "per_datapoint"}},
        {"model": {"name": "cvae", "condition": "label"}, "prior": {"name": "conditional"}},
    ],
)
def test_jit_equals_plain_for_local_guides_and_cvae(sections):
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}, **sections))
    batch = exp.data.train
    x, c = exp.condition(batch.x[:32], batch.y[:32])
    idx = torch.arange(32)
    out = {}
    for name in ("jit_trace", "trace"):
        elbo = ELBOS.build(name)
        torch.manual_seed(0)
        out[name] = [
            elbo.differentiable_loss(exp.model, exp.guide, x, c, idx=idx, num_data=200).item() for _ in range(3)
        ]
        assert getattr(elbo, "failure", None) is None
    assert out["jit_trace"] == pytest.approx(out["trace"], rel=1e-5)
