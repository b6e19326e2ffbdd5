"""The pure step (pyro_lvm.infer.pure): the traced function's loss and gradients equal the eager objective's on the
same draws, for every built-in model, guide, likelihood and objective (float64)."""

from __future__ import annotations

import json

import pyro
import pytest
import torch
from helpers import tiny_config

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.infer.pure import PureStep
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

M2 = {"model": {"name": "m2", "aux_weight": 0.5}, "guide": {"name": "m2", "classifier_hidden": [16]}}
CASES = {
    "vae-amortized-trace": {},
    "vae-mean_field": {"elbo": {"name": "mean_field"}},
    "vae-trace-2-particles": {"elbo": {"num_particles": 2}},
    "vae-trace-2-particles-sequential": {"elbo": {"num_particles": 2, "vectorize_particles": False}},
    "vae-renyi-iwae": {"elbo": {"name": "renyi", "num_particles": 3}},
    "vae-renyi-sequential": {"elbo": {"name": "renyi", "num_particles": 3, "vectorize_particles": False}},
    "per_datapoint": {"guide": {"name": "per_datapoint"}},
    "semi_amortized": {"guide": {"name": "semi_amortized", "refine_steps": 2}},
    "amortized_flow": {"guide": {"name": "amortized_flow"}},
    "mog-prior": {"prior": {"name": "mog"}},
    "vamp-prior": {"prior": {"name": "vamp"}},
    "gaussian-learned-scale": {"likelihood": {"name": "gaussian", "learn_scale": True}, "data": {"binarize": "none"}},
    "continuous_bernoulli": {"likelihood": {"name": "continuous_bernoulli"}, "data": {"binarize": "none"}},
    "cvae-label-conditional-prior": {"model": {"name": "cvae", "condition": "label"}, "prior": {"name": "conditional"}},
    "cvae-quadrants": {"model": {"name": "cvae", "condition": "quadrants"}},
    "m2-trace_enum": {**M2, "data": {"labelled": 40}, "elbo": {"name": "trace_enum"}},
    "m2-trace": {**M2, "data": {"labelled": 40}, "prior": {"name": "conditional", "hidden": [8]}},
}


def experiment(sections: dict) -> Experiment:
    sections = {k: dict(v) for k, v in sections.items()}
    sections.setdefault("train", {}).update(dtype="float64", pyro_validation=False)
    sections.setdefault("elbo", {}).update(**({} if sections["elbo"].get("name") == "renyi" else {"jit": "off"}))
    return Experiment.from_config(tiny_config(**sections))


def grads(exp) -> list[torch.Tensor | None]:
    out = []
    for m in (exp.model, exp.guide):
        for p in m.parameters():
            g = p.grad
            out.append(None if g is None else (g.to_dense() if g.is_sparse else g).clone())
            p.grad = None
    return out


@pytest.mark.parametrize("beta", [1.0, 0.3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_pure_step_equals_the_eager_objective(case, beta):
    exp = experiment(CASES[case])
    batches = exp.recipe.batches(exp)
    n = len(exp.data.training_rows)
    with scope(validation=False):
        pure = PureStep(exp.elbo, exp.model, exp.guide)
        for step in range(2):  # the second call replays the graph traced by the first
            batch = batches.batch(step)
            target, c = exp.condition(batch.x, batch.y)
            pyro.set_rng_seed(step)
            eager = loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=batch.idx, num_data=n, beta=beta)
            expected = grads(exp)
            pyro.set_rng_seed(step)
            loss = pure(target, c, idx=batch.idx, num_data=n, beta=beta)
            assert pure.failure is None, pure.failure
            got = grads(exp)
            assert torch.allclose(loss, eager, rtol=0, atol=1e-10 * abs(float(eager))), (float(loss), float(eager))
            for a, b in zip(got, expected, strict=True):
                assert (a is None) == (b is None)
                if a is not None:
                    assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
            after_pure = torch.rand(())
            pyro.set_rng_seed(step)
            loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=batch.idx, num_data=n, beta=beta)
            grads(exp)
            assert torch.rand(()) == after_pure  # the pure step drew what the eager step draws, no more


def params_of(exp) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (exp.model, exp.guide) for p in m.parameters()]


def trained(sections: dict, step: str, run_dir=None, steps: int = 12, resume: bool = False, **train_options):
    sections = {k: dict(v) for k, v in sections.items()}
    train_options = {"checkpoint_every": 6, "kl_warmup_steps": 8} | train_options
    sections.setdefault("train", {}).update(step=step, steps=steps, **train_options)
    exp = experiment(sections)
    history = train(exp, run_dir, resume=resume)
    return exp, history


TRAINED = ["vae-amortized-trace", "per_datapoint", "m2-trace_enum", "cvae-quadrants", "vae-renyi-iwae"]


@pytest.mark.parametrize("case", TRAINED)
def test_traced_training_equals_eager_training(case):
    """12 steps with KL warm-up (β an input of the graph), the per-row Adam of the tables, M2's labelled count:
    the traced run's history and parameters are the eager run's, bit for bit. M2 with trace_enum to 1e-12: traced,
    Pyro's enumeration always takes its masked sum (as under torch.jit), eagerly it skips the mask when no
    probability is zero, so the sums run in another order."""
    eager, h_eager = trained(CASES[case], "eager")
    traced, h_traced = trained(CASES[case], "traced")
    tol = {"rel": 1e-12, "abs": 0} if "trace_enum" in case else {"rel": 0, "abs": 0}
    for key in ("train_elbo", "train_objective"):
        assert [r[key] for r in h_traced] == pytest.approx([r[key] for r in h_eager], **tol)
    for a, b in zip(params_of(traced), params_of(eager), strict=True):
        assert torch.allclose(a, b, rtol=tol["rel"], atol=1e-14 if tol["rel"] else 0)


def test_a_traced_run_resumes_exactly(tmp_path):
    whole, _ = trained(CASES["per_datapoint"], "traced", tmp_path / "whole")
    trained(CASES["per_datapoint"], "traced", tmp_path / "halves", steps=6)
    torch.manual_seed(1234)  # the caller's stream moves: the resume restores the run's own
    resumed, _ = trained(CASES["per_datapoint"], "traced", tmp_path / "halves", resume=True)
    for a, b in zip(params_of(resumed), params_of(whole), strict=True):
        assert torch.equal(a, b)
    summary = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert "pure step, traced graph" in summary["elbo_path"]


def test_a_program_that_cannot_be_traced_takes_eager_steps_with_one_warning():
    exp = experiment(CASES["vae-amortized-trace"] | {"train": {"step": "traced", "steps": 4}})
    forward = exp.guide.forward

    def branchy(x, *args, **kwargs):
        if x.sum() > 0:  # a Python branch on a value
            return forward(x, *args, **kwargs)
        return forward(x, *args, **kwargs)

    exp.guide.forward = branchy
    with pytest.warns(UserWarning, match=r"train.step = 'traced': the step cannot be traced: .*; taking eager steps"):
        train(exp)
    reference = experiment(CASES["vae-amortized-trace"] | {"train": {"step": "eager", "steps": 4}})
    train(reference)
    for a, b in zip(params_of(exp), params_of(reference), strict=True):
        assert torch.equal(a, b)


def test_pyro_validation_on_takes_eager_steps_and_says_why():
    exp = experiment(CASES["vae-amortized-trace"] | {"train": {"step": "traced", "steps": 2}})
    exp.cfg = config.with_overrides(exp.cfg, ["train.pyro_validation=true"])
    with pytest.warns(UserWarning, match="Pyro's validation is on"):
        train(exp)


def test_a_traced_step_in_pieces_is_refused_in_one_line():
    exp = experiment(CASES["vae-amortized-trace"] | {"train": {"step": "traced", "micro_batches": 2}})
    with pytest.raises(PyroLVMError, match=r"train.step = 'traced' takes each batch in one piece .*micro_batches = 1"):
        train(exp)


@pytest.mark.slow
def test_compiled_training_matches_eager_training():
    """torch.compile fuses and reorders floating-point work: equal to rounding (float64), same draws."""
    eager, h_eager = trained(CASES["vae-amortized-trace"], "eager")
    compiled, h_compiled = trained(CASES["vae-amortized-trace"], "compiled")
    for a, b in zip(h_compiled, h_eager, strict=True):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-10)
    for a, b in zip(params_of(compiled), params_of(eager), strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
