"""ArviZ diagnostics: PSIS k̂ separates good from bad proposals; diagnose runs NUTS and reports R-hat. Runs on
ArviZ 0.x (InferenceData) and 1.x (DataTree, arviz_stats): whichever is installed."""

import json

import numpy as np
import pytest
import torch
from helpers import linear_gaussian_experiment, scaled_posterior, tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation._arviz import Posterior
from pyro_lvm.evaluation.diagnostics import (
    MIN_PSIS_DRAWS,
    convergence,
    guide_inference_data,
    psis_khat,
    samples_to_inference_data,
)
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


@pytest.mark.parametrize("draws", [1, 5, 20, 24, 25, 29])
def test_psis_khat_refuses_fewer_draws_than_a_pareto_tail_needs(draws):
    """Below 30 draws ArviZ 0.x returned k̂ = inf (a tail under 5 draws) or a fit, 1.x raised a ValueError (25 and
    fewer) or returned NaN (25-29): on both lines it is now one line naming the minimum."""
    with pytest.raises(PyroLVMError, match="draw at least 30 importance samples") as info:
        psis_khat(torch.zeros(draws, 3))  # (K, B)
    assert "\n" not in str(info.value) and MIN_PSIS_DRAWS == 30


def test_psis_khat_fits_every_row_from_the_minimum_on():
    """At exactly 30 draws both ArviZ lines fit a tail of 6 draws: a finite k̂ for every row of Pareto weights
    w = U^(-0.5), whose true shape is 0.5 (fitting noise at 6 tail draws is large: only finiteness and the shrinkage
    toward 0.5 of the prior, |mean k̂ - 0.5| < 0.3 over 200 rows, are asserted)."""
    u = torch.from_numpy(np.random.default_rng(1).uniform(size=(MIN_PSIS_DRAWS, 200)))  # (K, B)
    khat = psis_khat(-0.5 * u.log())
    assert np.isfinite(khat).all()
    assert abs(khat.mean() - 0.5) < 0.3


def test_psis_khat_of_degenerate_rows_is_inf_on_both_arviz_lines():
    """Equal weights leave no tail to fit (ArviZ 1.x raised "All tail values are the same" for the whole batch, 0.x
    said inf); an infinite or NaN weight has no finite moment (1.x said NaN for +inf). Every such row is inf and the
    ordinary row beside them keeps the k̂ it has alone."""
    ordinary = -0.5 * torch.from_numpy(np.random.default_rng(2).uniform(size=100)).log()
    equal, posinf, nan = torch.zeros(100), ordinary.clone(), ordinary.clone()
    posinf[7], nan[3] = float("inf"), float("nan")
    khat = psis_khat(torch.stack([ordinary, equal, posinf, nan], dim=1))  # (K, B) = (100, 4)
    alone = psis_khat(ordinary[:, None])
    assert np.isfinite(alone).all()
    assert khat[0] == pytest.approx(alone[0], abs=1e-12)
    assert np.isposinf(khat[1:]).all()


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


def test_diagnose_refuses_too_few_importance_samples_before_opening_a_run(tmp_path):
    """``--num-samples 20`` crashed inside ArviZ 1.x (a bug report) and gave k̂ = inf on 0.x: now a one-line
    refusal naming the minimum, before any run folder is read (this one does not even exist)."""
    with pytest.raises(PyroLVMError, match=r"--num-samples 20 is too few .* give --num-samples 30 or more") as info:
        diagnose([str(tmp_path / "no_run")], DiagnoseOptions(num_samples=20))
    assert "\n" not in str(info.value)


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
