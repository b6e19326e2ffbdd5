"""ArviZ diagnostics: PSIS k̂ separates good from bad proposals; diagnose runs NUTS and reports R-hat."""

import json

import numpy as np
import torch
from helpers import linear_gaussian_experiment, scaled_posterior, tiny_config

from pyro_lvm import config
from pyro_lvm.diagnose import DiagnoseOptions, diagnose
from pyro_lvm.diagnostics import guide_inference_data, psis_khat
from pyro_lvm.evaluate import log_weights
from pyro_lvm.experiment import Experiment
from pyro_lvm.train import train


def test_psis_khat_flags_proposals_narrower_than_the_posterior():
    """A proposal wider than p(z|x) has bounded weights (k̂ < 0.5); one at 0.3x the posterior's scale has
    weights with infinite variance, which k̂ > 0.7 flags."""
    lg, x, exp = linear_gaussian_experiment("amortized", 30)
    torch.manual_seed(0)
    wide = psis_khat(log_weights(exp.model, scaled_posterior(lg, x, 1.5), x, None, 4000))
    narrow = psis_khat(log_weights(exp.model, scaled_posterior(lg, x, 0.3), x, None, 4000))
    assert wide.shape == (30,) and np.median(wide) < 0.5
    assert np.median(narrow) > 0.7


def test_guide_samples_as_inference_data():
    lg, x, exp = linear_gaussian_experiment("amortized", 7)
    idata = guide_inference_data(exp.guide, x, num_samples=50)
    assert idata.posterior["z"].shape == (1, 50, 7, 2)
    assert list(idata.posterior["z"].dims) == ["chain", "draw", "point", "latent"]


def _tiny_run(tmp_path, name, guide):
    cfg = tiny_config(guide={"name": guide}, train={"steps": 60, "out_dir": str(tmp_path / name)})
    (tmp_path / name).mkdir()
    config.save(cfg, tmp_path / name / "config.toml")
    train(Experiment.from_config(cfg), tmp_path / name)
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
