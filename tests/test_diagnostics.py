"""ArviZ diagnostics: PSIS k̂ separates good from bad proposals; diagnose runs NUTS and reports R-hat. Runs on
ArviZ 0.x (InferenceData) and 1.x (DataTree, arviz_stats): whichever is installed."""

import json

import numpy as np
import pytest
import torch
from helpers import linear_gaussian_experiment, scaled_posterior, tiny_config

from pyro_lvm.evaluation._arviz import Posterior
from pyro_lvm.evaluation.diagnostics import convergence, guide_inference_data, psis_khat, samples_to_inference_data
from pyro_lvm.evaluation.estimates import log_weights
from pyro_lvm.studies.diagnose import DiagnoseOptions, diagnose
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train


def test_psis_khat_flags_proposals_narrower_than_the_posterior():
    """A proposal wider than p(z|x) has bounded weights (k̂ < 0.5); one at 0.3x the posterior's scale has
    weights with infinite variance, which k̂ > 0.7 flags."""
    lg, x, exp = linear_gaussian_experiment("amortized", 30)
    torch.manual_seed(0)
    wide = psis_khat(log_weights(exp.model, scaled_posterior(lg, x, 1.5), x, None, 4000))
    narrow = psis_khat(log_weights(exp.model, scaled_posterior(lg, x, 0.3), x, None, 4000))
    assert wide.shape == (30,) and np.median(wide) < 0.5
    assert np.median(narrow) > 0.7


@pytest.mark.parametrize("k", [0.2, 0.5, 0.9])
def test_psis_khat_recovers_a_known_pareto_tail(k):
    """w = U^(-k), U ~ Uniform(0, 1), is Pareto with shape 1/k: its tail is generalised Pareto with shape exactly k.
    A sign slip (ArviZ 1.x's psislw takes -log w) would fit the bounded weights U^k and give k̂ < 0. Tolerance:
    per-row k̂ sd ~0.12 at 4000 draws (measured), so 3 sd/sqrt(40) ~0.06, plus ~0.02 of shrinkage toward 0.5."""
    u = torch.from_numpy(np.random.default_rng(0).uniform(size=(4000, 40)))  # (K, B)
    khat = psis_khat(-k * u.log())
    assert khat.shape == (40,)
    assert abs(khat.mean() - k) < 0.08


def test_convergence_separates_mixed_from_disjoint_chains():
    """iid chains: R-hat ~ 1 and bulk ESS ~ all draws; chains stuck 3 sd apart: R-hat >> 1, ESS ~ number of chains."""
    z = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 500, 2, 3)))  # (C, S, B, D)
    z[:, :, 1] += torch.arange(4.0, dtype=z.dtype)[:, None, None] * 3  # datapoint 1: chain c centred at 3c
    stats = convergence(samples_to_inference_data(z))
    assert stats["rhat"].shape == stats["ess_bulk"].shape == (2,)
    assert stats["rhat"][0] < 1.02 and stats["ess_bulk"][0] > 1000
    assert stats["rhat"][1] > 2 and stats["ess_bulk"][1] < 50


def test_guide_samples_as_inference_data():
    """The installed ArviZ's posterior container: InferenceData (0.x) or DataTree (1.x)."""
    lg, x, exp = linear_gaussian_experiment("amortized", 7)
    idata = guide_inference_data(exp.guide, x, num_samples=50)
    assert isinstance(idata, Posterior)
    assert idata.posterior["z"].shape == (1, 50, 7, 2)
    assert list(idata.posterior["z"].dims) == ["chain", "draw", "point", "latent"]


def _tiny_run(tmp_path, name, guide):
    cfg = tiny_config(guide={"name": guide}, train={"steps": 60, "out_dir": str(tmp_path / name)})
    train(Experiment.from_config(cfg), tmp_path / name)  # saves config.toml beside the checkpoint
    return str(tmp_path / name)


def test_diagnose_reports_khat_per_guide_and_nuts_rhat(tmp_path):
    runs = [_tiny_run(tmp_path, "a", "amortized"), _tiny_run(tmp_path, "p", "per_datapoint")]
    opts = DiagnoseOptions(
        num_points=6, num_samples=300, nuts_points=2, nuts_chains=2, nuts_samples=200, nuts_warmup=200
    )
    result = diagnose(runs, opts, tmp_path / "diag")
    names = [r["proposal"] for r in result["psis"]]
    assert names == ["prior p(z) [a]", "amortized [a]", "per_datapoint [p]"]
    for row in result["psis"]:
        assert len(row["khat"]) == 6 and np.isfinite(row["khat"]).all()
    nuts = result["nuts"]
    assert len(nuts["rhat"]) == 2 and max(nuts["rhat"]) < 1.05  # tiny chains: a loose bound
    assert (tmp_path / "diag" / "guide_vs_nuts.png").is_file()
    saved = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert saved["nuts"]["rhat"] == nuts["rhat"]
