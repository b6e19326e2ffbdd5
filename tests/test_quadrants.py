"""Quadrant completion: the NN baseline, the CVAE against it, feeding its prediction to the prior, grids."""

import json
import math

import pytest
import torch
from helpers import tiny_config

from pyro_lvm import config
from pyro_lvm.data import Dataset, Split
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import evaluate_split
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train


def bimodal_completion(n: int, seed: int) -> Split:
    """4×4 binary images: the observed bottom-left quadrant is random noise; the 12 hidden pixels are pattern A
    or its complement, each with probability 1/2, independently of c. So log p(x | c) = log 1/2 exactly, while
    any model with independent hidden pixels can do no better than 12 log 1/2 (every pixel is a fair coin)."""
    pattern = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(0)).float()  # every split's A
    g = torch.Generator().manual_seed(seed)
    flip = torch.randint(0, 2, (n, 1), generator=g).float()
    x = (pattern + flip) % 2  # (n, 16): A or 1 - A
    observed = torch.zeros(4, 4, dtype=torch.bool)
    observed[2:, :2] = True  # bottom-left, the convention of quadrant_mask
    x[:, observed.reshape(-1)] = torch.randint(0, 2, (n, 4), generator=g).float()
    return Split(x, torch.zeros(n, dtype=torch.long))


def bimodal_experiment(prior: str, steps: int = 1500, baseline: dict | None = None) -> Experiment:
    data = Dataset(
        "bimodal", bimodal_completion(1000, 0), bimodal_completion(200, 1), bimodal_completion(400, 2), (4, 4), 1, True
    )
    cfg = tiny_config(
        model={"name": "cvae", "condition": "quadrants", "observed_quadrants": 1, "latent_dim": 2, "hidden": [32]},
        prior={"name": prior, "hidden": [16]},
        guide={"hidden": [32]},
        optim={"lr": 0.01},
        train={"steps": steps, "batch_size": 100, "checkpoint_every": steps, "pyro_validation": False},
        baseline={"hidden": [32], "steps": 500, "batch_size": 100, "lr": 0.01, **(baseline or {})},
    )
    return Experiment.from_config(cfg, data)


@pytest.mark.parametrize("prior", ["standard_normal", "conditional"])
def test_cvae_beats_the_nn_baseline_on_a_bimodal_completion(tmp_path, prior):
    """Sohn et al.'s point on a task with a known answer: the baseline is stuck at 12 log 1/2 = −8.32 nats, the
    CVAE's latent can pick the pattern, and no model can beat log 1/2 = −0.69 in expectation (Gibbs)."""
    exp = bimodal_experiment(prior)
    train(exp, tmp_path)
    test = exp.data.test
    target, c = exp.condition(test.x, test.y)
    with torch.no_grad():
        nn_log_px = exp.model.baseline.log_prob(target, c)
    assert abs(float(nn_log_px.mean()) - 12 * math.log(0.5)) < 0.3  # the best factorised model, nearly
    result = evaluate_split(exp.model, exp.guide, test, exp.condition, 500, 500, 100)
    iwae = result["log_px"]
    assert iwae.mean > float(nn_log_px.mean()) + 5  # the CVAE represents both completions
    assert iwae.mean < math.log(0.5) + 3 * iwae.stderr + 0.05  # and is no better than the truth


def test_baseline_is_frozen_fed_to_the_prior_and_survives_resume(tmp_path):
    exp = bimodal_experiment("conditional", steps=20, baseline={"feed_prior": True, "steps": 50})
    assert exp.model.prior.net.net[0].in_features == 4 + 12  # [c, E[x | f(c)]]
    assert not any(p.requires_grad for p in exp.model.baseline.parameters())
    start = {k: v.clone() for k, v in exp.model.baseline.state_dict().items()}
    train(exp, tmp_path)
    fitted = {k: v.clone() for k, v in exp.model.baseline.state_dict().items()}
    assert any(not torch.equal(start[k], fitted[k]) for k in start)  # the fit moved it
    fit = {k: v for k, v in json.loads((tmp_path / "metrics.json").read_text()).items() if k.startswith("baseline_")}
    assert "baseline_train_log_px" in fit
    (tmp_path / "metrics.json").unlink()  # the fit's summary travels in the checkpoint, not in metrics.json
    resumed = bimodal_experiment("conditional", steps=40, baseline={"feed_prior": True, "steps": 50})
    train(resumed, tmp_path, resume=True)  # restores the fitted baseline; SVI never updates it
    after = json.loads((tmp_path / "metrics.json").read_text())
    assert {k: after[k] for k in fit} == fit
    for key, value in resumed.model.baseline.state_dict().items():
        assert torch.equal(value, fitted[key]), key
    assert not torch.equal(resumed.model.prior.net.net[0].weight, exp.model.prior.net.net[0].weight)


def test_every_prior_variant_gets_the_same_baseline():
    a, b = (bimodal_experiment(p).model.baseline.state_dict() for p in ["standard_normal", "conditional"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_feed_prior_needs_quadrants_and_a_conditional_prior():
    with pytest.raises(PyroLVMError, match="baseline.feed_prior .* needs model.condition = 'quadrants'"):
        tiny_config(
            model={"name": "cvae", "condition": "label"}, prior={"name": "conditional"}, baseline={"feed_prior": True}
        )
    with pytest.raises(PyroLVMError, match="prior.name = 'conditional'"):
        tiny_config(model={"name": "cvae", "condition": "quadrants"}, baseline={"feed_prior": True})
    with pytest.raises(PyroLVMError, match="unknown config key 'baseline.depth'"):
        config.from_dict({"baseline": {"depth": 3}})
