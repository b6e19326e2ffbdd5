"""Small faults a user met after training, each checked as the user saw it."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

import pyro_lvm
from pyro_lvm.evaluation.estimates import active_units
from pyro_lvm.studies.compare_report import print_comparison


def _gaps(converged: bool, gap_mean: float, gap_se: float, share: dict) -> dict:
    one = {"mean": -50.0, "stderr": 0.5, "n": 40}
    return {
        **{k: one for k in ("L_q", "L_qstar", "log_px", "approximation_gap")},
        "amortization_gap": {"mean": gap_mean, "stderr": gap_se, "n": 40},
        "qstar_converged": converged,
        "share_closed": share,
        "warnings": [],
    }


def _method(guide: str, units: int | None) -> dict:
    return {"guide": guide, "train_elbo": -50.0, "train_elbo_se": 0.5, "test_elbo": -51.0, "test_elbo_se": 0.5,
            "test_log_px": -49.0, "test_log_px_se": 0.5, "active_units": units, "train_time_s": 1.0, "peak_rss_mb": 300.0}  # fmt: skip


def test_refinement_share_is_na_with_the_reason_when_qstar_did_not_converge(tmp_path, capsys):
    print_comparison({"methods": [], "gaps": _gaps(False, 0.01, 0.2, {"0": 9.19, "5": 3.0})}, tmp_path)
    out = capsys.readouterr().out
    assert "919%" not in out and "n/a (q* did not converge" in out


def test_refinement_share_is_na_when_the_gap_is_within_its_noise(tmp_path, capsys):
    print_comparison({"methods": [], "gaps": _gaps(True, 0.01, 0.2, {"0": 9.19})}, tmp_path)
    assert "n/a (the amortization gap, 0.010 ± 0.200 nats, is within its noise)" in capsys.readouterr().out
    print_comparison({"methods": [], "gaps": _gaps(True, 2.0, 0.1, {"0": 0.0, "5": 0.75})}, tmp_path)
    assert "K=0: 0%, K=5: 75%" in capsys.readouterr().out


def test_the_compare_table_has_an_active_units_column(tmp_path, capsys):
    print_comparison({"methods": [_method("amortized", 3), _method("per_datapoint", None)]}, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "active units" in line)
    assert "guide" in header
    assert any(line.startswith("amortized") and " 3 " in line for line in lines)


def test_active_units_of_a_per_datapoint_guide_read_its_rows():
    exp = pyro_lvm.Experiment.from_config(tiny_config(guide={"name": "per_datapoint"}))
    n = len(exp.data.train)
    with torch.no_grad():  # unit 0 varies over the rows (variance ~1), unit 1 is the same everywhere
        exp.guide.loc.weight[:, 0] = torch.randn(n)
        exp.guide.loc.weight[:, 1] = 0.3
    assert active_units(exp.guide, exp.data.train, exp.condition, num_data=n) == 1


def test_a_per_datapoint_progress_line_shows_no_nan_validation(capsys):
    exp = pyro_lvm.Experiment.from_config(
        tiny_config(guide={"name": "per_datapoint"}, train={"steps": 4, "progress": True, "eval_every": 2})
    )
    pyro_lvm.train(exp)
    err = capsys.readouterr().err
    assert "elbo=" in err and "nan" not in err


def test_the_flow_guide_with_vamp_is_refused_for_its_flow_not_a_missing_encoder():
    with pytest.raises(pyro_lvm.PyroLVMError) as err:
        pyro_lvm.Experiment.from_config(tiny_config(prior={"name": "vamp"}, guide={"name": "amortized_flow"}))
    assert "has none" not in str(err.value) and "an encoder whose q is a flow" in str(err.value)


def test_bernoulli_on_grey_data_is_refused_before_any_training_step(tmp_path):
    """Grey values in [0, 1] pass the experiment's range check; training refuses them before its first step."""
    grey = torch.rand(50, 8, generator=torch.Generator().manual_seed(0))
    exp = pyro_lvm.Experiment.from_config(
        tiny_config(likelihood={"name": "bernoulli"}, train={"pyro_validation": False}), pyro_lvm.from_tensors(grey)
    )
    with pytest.raises(pyro_lvm.PyroLVMError, match="non-binary targets .* use likelihood.name = 'gaussian'"):
        pyro_lvm.train(exp, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no step, no folder


def test_bernoulli_outside_zero_one_is_refused_when_the_experiment_is_built():
    with pytest.raises(pyro_lvm.PyroLVMError, match=r"outside \[0, 1\]"):
        pyro_lvm.Experiment.from_config(
            tiny_config(likelihood={"name": "bernoulli"}), pyro_lvm.from_tensors(2 * torch.rand(50, 8))
        )


def test_the_cli_train_summary_of_a_per_datapoint_run_shows_no_nan(tmp_path, capsys, monkeypatch):
    from helpers import tiny_toml

    from pyro_lvm.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        tiny_toml(4).replace("[guide]\nhidden = [8]\n", '[guide]\nname = "per_datapoint"\n')
    )
    assert main(["train", "c.toml"]) == 0
    out = capsys.readouterr()
    assert "nan" not in out.out and "n/a" in out.out, out.err
