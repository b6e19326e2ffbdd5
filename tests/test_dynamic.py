"""Dynamic binarization: training batches are fresh Bernoulli draws, every evaluation sees fixed binary images."""

import json
import subprocess
import sys

import pytest
import torch
from helpers import data_options
from test_experiments import EXPERIMENTS, TINY

from pyro_lvm.data import load_dataset
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.models.likelihoods import BernoulliLogits


def _binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


def test_every_evaluated_split_is_binary_and_training_draws_from_the_grey_images():
    ds = load_dataset(data_options(binarize="dynamic"))
    assert all(_binary(s.x) for s in (ds.train, ds.val, ds.test))
    assert not _binary(ds.training_rows.x) and ds.dynamic
    assert torch.equal(ds.train.y, ds.training_rows.y)  # the same rows, one fixed draw of each
    again = load_dataset(data_options(binarize="dynamic"))
    assert torch.equal(again.train.x, ds.train.x)  # seeded: the same draw every time
    static = load_dataset(data_options(binarize="static"))
    assert static.training_rows is static.train and not static.dynamic


def test_bernoulli_refuses_grey_targets_while_validation_is_on():
    d = BernoulliLogits(torch.zeros(3, 4))
    with pytest.raises(PyroLVMError, match="non-binary targets"):
        d.log_prob(torch.full((3, 4), 0.5))
    assert d.log_prob(torch.ones(3, 4)).shape == (3,)


def _cli(args, cwd):
    out = subprocess.run(
        [sys.executable, "-m", "pyro_lvm.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_dynamic_run_trains_evaluates_compares_and_diagnoses(tmp_path):
    """The whole path in subprocesses (Pyro validation is on by default there, so the Bernoulli likelihood would
    refuse any grey image it is asked to score): train -> evaluate -> compare -> diagnose."""
    sets = [f"--set={o}" for o in [*TINY, "data.binarize='dynamic'"]]
    _cli(["train", str(EXPERIMENTS / "digits_vae_2d.toml"), *sets, f"--set=train.out_dir={tmp_path / 'run'}"], tmp_path)
    _cli(["evaluate", str(tmp_path / "run")], tmp_path)
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["log_px"]["mean"] < 0
    compare_sets = [*sets, "--set=compare.guides=['amortized', 'per_datapoint']"]
    _cli(
        ["compare", str(EXPERIMENTS / "digits_compare.toml"), *compare_sets, f"--set=compare.out_dir={tmp_path / 'c'}"],
        tmp_path,
    )
    _cli(["evaluate", str(tmp_path / "c" / "per_datapoint")], tmp_path)  # evaluated on its training rows
    diag = ["--num-points=4", "--num-samples=100", "--nuts-points=1", "--nuts-chains=2", "--nuts-samples=30"]
    runs = [str(tmp_path / "c" / "amortized"), str(tmp_path / "c" / "per_datapoint")]
    out = _cli(["diagnose", *runs, *diag, "--nuts-warmup=30", f"--out={tmp_path / 'd'}"], tmp_path)
    assert "PSIS" in out.stdout
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "fixed Bernoulli draw" in summary["evaluation_data"]  # what evaluations saw is recorded in the run
