"""Compiled ELBOs (elbo.jit): the plain ELBO's gradients bit for bit, one compiled function, safe fallbacks."""

import json
import warnings

import pyro
import pytest
import torch
from helpers import make_elbo, tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train


def _loss_and_grads(exp, elbo, x, idx, seed):
    for p in [*exp.model.parameters(), *exp.guide.parameters()]:
        p.grad = None
    torch.manual_seed(seed)
    loss = elbo.differentiable_loss(exp.model, exp.guide, x, None, idx=idx, num_data=200, beta=0.3)
    loss.backward()
    grads = [p.grad.clone() for p in [*exp.model.parameters(), *exp.guide.parameters()] if p.grad is not None]
    return loss.detach(), grads


@pytest.mark.parametrize("name", ["trace", "mean_field"])
@pytest.mark.parametrize("particles", [1, 3])
def test_compiled_equals_plain_loss_and_gradients(name, particles):
    """Gradients equal to the last bit; the loss value to float32 rounding (Pyro's plain ELBO sums the value in
    Python floats, the compiled one in tensors)."""
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    pyro.enable_validation(False)
    x, idx = exp.data.train.x[:32], torch.arange(32)
    jit = make_elbo(name, "auto", num_particles=particles)
    plain = make_elbo(name, "off", num_particles=particles)
    _loss_and_grads(exp, jit, x, idx, seed=0)  # the first call traces
    for seed in (1, 2):
        lj, gj = _loss_and_grads(exp, jit, x, idx, seed)
        lp, gp = _loss_and_grads(exp, plain, x, idx, seed)
        assert "compiled" in jit.path, jit.path
        assert torch.allclose(lj, lp, rtol=1e-6), (lj, lp)
        assert len(gj) == len(gp) > 0
        for a, b in zip(gj, gp, strict=True):
            assert torch.equal(a, b), (a - b).abs().max()


@pytest.mark.parametrize(
    "sections",
    [
        {"train": {"kl_warmup_steps": 15}},  # beta varies: passed as a tensor, scaled in double like the plain path
        {"guide": {"name": "per_datapoint"}},  # sparse row gradients, row-wise Adam
        {"model": {"name": "cvae", "condition": "label"}, "prior": {"name": "conditional"}},
        {"prior": {"name": "mog"}, "elbo": {"name": "mean_field", "num_particles": 3}},  # PyroParams, MC KL
        {"likelihood": {"name": "gaussian", "learn_scale": True}, "data": {"binarize": "none"}},
    ],
    ids=["warmup", "per_datapoint", "cvae", "mog_mean_field_K3", "gaussian"],
)
def test_compiled_training_equals_plain_bit_for_bit(tmp_path, sections):
    """20 steps (two batch shapes: 32 and the irregular last batch of 8) with elbo.jit = auto and off end in the
    same parameters, to the last bit."""
    params, elbos = {}, {}
    for jit in ("auto", "off"):
        raw = {k: dict(v) for k, v in sections.items()}
        raw.setdefault("elbo", {})["jit"] = jit
        raw.setdefault("train", {})["pyro_validation"] = False
        exp = Experiment.from_config(tiny_config(**raw))
        train(exp, tmp_path / jit)
        params[jit] = [p.detach() for p in [*exp.model.parameters(), *exp.guide.parameters()]]
        elbos[jit] = exp.elbo
    assert "compiled (torch.jit.trace, 2 batch shape(s))" in elbos["auto"].path, elbos["auto"].path
    assert len(elbos["auto"]._bound) == 2  # later calls skip Pyro's per-call plumbing (JitWithFallback._bind)
    for jit, word in (("auto", "compiled"), ("off", "plain")):  # the run folder says which ran
        assert word in json.loads((tmp_path / jit / "metrics.json").read_text())["elbo_path"]
    assert all(torch.equal(a, b) for a, b in zip(params["auto"], params["off"], strict=True))


def test_compiled_mean_field_compiles_once():
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    pyro.enable_validation(False)
    x, idx = exp.data.train.x[:32], torch.arange(32)
    elbo = make_elbo("mean_field", "auto")
    _loss_and_grads(exp, elbo, x, idx, 0)
    compiled = elbo.jit._differentiable_loss
    for seed in (1, 2, 3):
        _loss_and_grads(exp, elbo, x, idx, seed)
    assert elbo.jit._differentiable_loss is compiled and len(compiled.compiled) == 1


def test_compiled_draws_what_plain_draws_for_every_batch_shape():
    """Tracing (also of the irregular last batch) leaves the random stream as a plain step would: a compiled run
    and a plain run from the same seed give the same losses, so resume stays exact."""
    exp = Experiment.from_config(tiny_config(train={"pyro_validation": False}))
    pyro.enable_validation(False)
    x = exp.data.train.x
    losses, elbos = {}, {jit: make_elbo("trace", jit) for jit in ("auto", "off")}
    for jit, elbo in elbos.items():
        torch.manual_seed(0)
        losses[jit] = [
            elbo.differentiable_loss(exp.model, exp.guide, x[:b], None, idx=torch.arange(b), num_data=200).item()
            for b in (32, 32, 7, 32, 7)
        ]
    assert losses["auto"] == pytest.approx(losses["off"], rel=1e-6)
    assert len(elbos["auto"]._fns) == 2 and elbos["auto"].failure is None  # one per batch shape


def test_fallbacks_auto_is_silent_on_warns():
    """Where the compiled path cannot run, the plain ELBO does (same loss); 'auto' says why in ``path``, 'on'
    also warns. Pyro validation on keeps 'auto' plain, so its checks run."""
    x = Experiment.from_config(tiny_config()).data.train.x[:16]
    idx = torch.arange(16)
    semi = Experiment.from_config(tiny_config(guide={"name": "semi_amortized"}, train={"pyro_validation": False}))
    pyro.enable_validation(False)
    lp, _ = _loss_and_grads(semi, make_elbo("trace", "off"), x, idx, 0)
    auto = make_elbo("trace", "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        la, _ = _loss_and_grads(semi, auto, x, idx, 0)
    assert torch.equal(la, lp) and "plain (tracing failed" in auto.path
    on = make_elbo("trace", "on")
    with pytest.warns(UserWarning, match="tracing failed"):
        lo, _ = _loss_and_grads(semi, on, x, idx, 0)
    assert torch.equal(lo, lp)

    pyro.enable_validation(True)
    exp = Experiment.from_config(tiny_config())
    auto = make_elbo("trace", "auto")
    _loss_and_grads(exp, auto, x, idx, 0)
    assert "Pyro validation is on" in auto.path and not auto._fns


def test_jit_config_errors():
    with pytest.raises(PyroLVMError, match="'jit_trace' is now elbo.name = 'trace' with elbo.jit = 'on'"):
        tiny_config(elbo={"name": "jit_trace"})
    with pytest.raises(PyroLVMError, match="'renyi' has none"):
        tiny_config(elbo={"name": "renyi", "jit": "on"})
    with pytest.raises(PyroLVMError, match="elbo.jit"):
        tiny_config(elbo={"jit": "yes"})


def test_fast_bernoulli_equals_torch_bernoulli():
    """Binary and (with validation off) grey targets: the value and gradient of torch's Bernoulli."""
    import pyro.distributions as dist

    pyro.enable_validation(False)

    from pyro_lvm.models.likelihoods import BernoulliLogits

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)  # (K, B, P)
    for x in (torch.bernoulli(torch.full((5, 7), 0.4, dtype=torch.float64)), torch.rand(5, 7, dtype=torch.float64)):
        ours = BernoulliLogits(logits).log_prob(x)
        ref = dist.Bernoulli(logits=logits, validate_args=False).to_event(1).log_prob(x)
        assert ours.shape == (3, 5) and torch.allclose(ours, ref, atol=1e-12)
        (g1,) = torch.autograd.grad(ours.sum(), logits)
        (g2,) = torch.autograd.grad(ref.sum(), logits)
        assert torch.allclose(g1, g2, atol=1e-12)
