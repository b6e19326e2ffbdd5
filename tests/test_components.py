"""Every registered prior x guide x likelihood x elbo is at least built, traced and stepped once."""

import math

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import batch_estimates
from pyro_lvm.infer.elbos import JIT_FORMS, loss_and_backward
from pyro_lvm.registry import ELBOS, GUIDES, LIKELIHOODS, PRIORS
from pyro_lvm.training.experiment import Experiment


def _model_for(prior, guide=None):
    if guide == "m2":  # the semi-supervised model's own guide
        return {"name": "m2"}
    return {"name": "cvae", "condition": "label"} if prior == "conditional" else {}


def _step(exp):
    data = exp.data.train
    idx = torch.arange(16)
    y = data.y[idx]
    if exp.data.labelled is not None:  # M2 with scarce labels: the batch's unlabelled rows carry label -1
        y = torch.where(exp.data.labelled[idx], y, -1)
    target, c = exp.condition(data.x[idx], y)
    before = {k: v.clone() for k, v in exp.guide.state_dict().items()}
    exp.optim.zero_grad()
    loss = loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=idx, num_data=len(data))
    # Every trainable decoder and prior parameter gets a gradient (Pyro's loss_and_grads, used for RenyiELBO,
    # skips backward when the traces hold no ``param`` sites: a silent failure a loss value would not show).
    trainable = [(n, p) for n, p in exp.model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None]
    exp.optim.step()
    assert math.isfinite(float(loss))
    changed = [k for k, v in exp.guide.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "one step must move the guide's parameters"
    lp, el = batch_estimates(exp.model, exp.guide, target, c, idx, len(data), num_samples=8, chunk_size=3)
    assert lp.shape == (16,) and torch.isfinite(lp).all() and torch.isfinite(el).all()


@pytest.mark.parametrize("prior", PRIORS.names())
@pytest.mark.parametrize("guide", GUIDES.names())
@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_prior_guide_likelihood_step(prior, guide, likelihood):
    binarize = "static" if likelihood in ("bernoulli", "discretized_logistic") else "none"  # 0/1 are 8-bit values
    cfg = tiny_config(
        prior={"name": prior, "num_components": 3},
        guide={"name": guide, "refine_steps": 2},
        likelihood={"name": likelihood},
        model=_model_for(prior, guide),
        data={"binarize": binarize},
    )
    if prior == "vamp" and guide in ("per_datapoint", "amortized_flow", "m2"):  # no encoder of x alone to share
        with pytest.raises(PyroLVMError, match="has no encoder|q is a flow|unconditional"):
            Experiment.from_config(cfg)
        return
    _step(Experiment.from_config(cfg))


def test_vamp_prior_is_a_mixture_of_encoded_pseudo_inputs():
    exp = Experiment.from_config(tiny_config(prior={"name": "vamp", "num_components": 4}))
    p = exp.model.prior()
    loc, scale = exp.guide.encode(exp.model.prior.pseudo_inputs)
    z = torch.randn(6, 2)
    expected = torch.logsumexp(torch.distributions.Normal(loc, scale).log_prob(z[:, None]).sum(-1), -1) - math.log(4)
    assert torch.allclose(p.log_prob(z), expected, atol=1e-5)
    names = [n for n, _ in [*exp.model.named_parameters(), *exp.guide.named_parameters()]]
    assert len(names) == len(set(map(id, [*exp.model.parameters(), *exp.guide.parameters()])))  # none twice
    assert "prior.pseudo_inputs_unconstrained" in dict(exp.model.named_parameters())
    with pytest.raises(PyroLVMError, match="unconditional"):
        Experiment.from_config(tiny_config(prior={"name": "vamp"}, model={"name": "cvae", "condition": "label"}))


@pytest.mark.parametrize(
    "elbo, jit", [(name, jit) for name in ELBOS.names() for jit in ("off", "on") if jit == "off" or name in JIT_FORMS]
)
@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("prior", ["standard_normal", "mog"])  # without and with PyroParams (param sites)
@pytest.mark.parametrize("guide", ["amortized", "amortized_flow"])
def test_elbo_step(elbo, jit, particles, prior, guide):
    """Every ELBO, plain and compiled ('on' compiles even with the tests' Pyro validation on), with a Gaussian and
    a flow guide (analytic-KL ELBOs fall back to a sampled KL for the flow). ``trace_enum`` has a label to sum out
    only in M2: it steps M2 with scarce labels (labelled and enumerated unlabelled rows) instead."""
    semi = {"model": {"name": "m2"}, "guide": {"name": "m2"}, "data": {"labelled": 40}} if elbo == "trace_enum" else {}
    if semi and guide == "amortized_flow":
        pytest.skip("trace_enum runs with the m2 guide (one case per prior and particle count)")
    sections = {"guide": {"name": guide}, **semi}
    cfg = tiny_config(
        elbo={"name": elbo, "num_particles": particles, "jit": jit},
        prior={"name": prior, "num_components": 3},
        **sections,
    )
    _step(Experiment.from_config(cfg))
