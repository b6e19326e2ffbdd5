"""pyro_lvm.load: a run folder opened read-only reproduces the run's evaluation, writes nothing, leaves the caller's
random state alone, and finds a relative data file from another working directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import numpy as np
import pyro
import pytest
import torch
from helpers import tiny_config

import pyro_lvm
from pyro_lvm.studies.report import evaluate_run


def folder_digest(path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny per-datapoint run on a relative .npz (trained from the folder above the run), evaluated."""
    root = tmp_path_factory.mktemp("project")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        x = (np.random.default_rng(0).random((120, 16)) > 0.5).astype(np.float32)
        np.savez("points.npz", x=x, y=np.zeros(120, dtype=np.int64))
        with pyro_lvm.scope():
            cfg = tiny_config(
                data={"name": "arrays", "path": "points.npz", "binarize": "none", "max_train": None},
                guide={"name": "per_datapoint"},
                train={"steps": 6},
                eval={"num_samples": 7, "num_points": 20},
            )
            pyro_lvm.train(pyro_lvm.Experiment.from_config(cfg), "runs/tiny", figures=False)
            evaluate_run("runs/tiny")
    finally:
        os.chdir(cwd)
    return root / "runs" / "tiny"


def test_load_reproduces_the_evaluation_writes_nothing_and_keeps_the_rng(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved "points.npz" is found above the run folder
    before = folder_digest(trained_run)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    settings = dict(pyro.settings.get())
    exp = pyro_lvm.load(trained_run)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert dict(pyro.settings.get()) == settings
    assert folder_digest(trained_run) == before
    assert exp.step == 6 and exp.history[-1]["step"] == 6
    assert pyro_lvm.evaluate(exp) == json.loads((trained_run / "evaluation.json").read_text())


def test_a_missing_data_file_is_one_line_naming_the_key(trained_run, tmp_path):
    moved = tmp_path / "elsewhere" / "tiny"
    moved.mkdir(parents=True)
    for p in trained_run.iterdir():
        (moved / p.name).write_bytes(p.read_bytes())
    with pytest.raises(pyro_lvm.PyroLVMError, match=r"^data\.path = 'points\.npz'") as err:
        pyro_lvm.load(moved)
    assert "\n" not in str(err.value)


def test_a_train_holding_the_folder_refuses_the_load_and_a_folder_without_a_lock_gets_none(trained_run):
    from pyro_lvm.runs.lock import run_lock

    with run_lock(trained_run), pytest.raises(pyro_lvm.PyroLVMError, match=rf"\(pid {os.getpid()}\); load it once"):
        pyro_lvm.load(trained_run)
    copy = trained_run.parent / "copy"  # beside the run: its data file is found above it
    copy.mkdir()
    for p in trained_run.iterdir():
        if p.name != ".lock":
            (copy / p.name).write_bytes(p.read_bytes())
    pyro_lvm.load(copy)
    assert not (copy / ".lock").exists()  # a read-only open writes no lock file
    shutil.rmtree(copy)  # the module's other tests see the one run


def test_only_the_last_checkpoint_is_kept(trained_run):
    with pytest.raises(pyro_lvm.PyroLVMError, match="'last'"):
        pyro_lvm.load(trained_run, checkpoint="best")


def test_cli_encode_writes_the_table_rows_and_nothing_in_the_run(trained_run, tmp_path):
    from pyro_lvm.cli import main

    before = folder_digest(trained_run)
    assert main(["encode", str(trained_run), "--split", "train", "--out", str(tmp_path / "z.npz")]) == 0
    assert main(["encode", str(trained_run), "--split", "train", "--out", str(tmp_path / "z.csv")]) == 0
    assert folder_digest(trained_run) == before
    exp = pyro_lvm.load(trained_run)
    saved = np.load(tmp_path / "z.npz")
    assert np.array_equal(saved["mean"], exp.guide.loc.weight.detach().numpy())
    assert np.array_equal(saved["index"], np.arange(len(exp.data.train)))
    header, *rows = (tmp_path / "z.csv").read_text().splitlines()
    assert header == "index,label,mean_0,mean_1,scale_0,scale_1" and len(rows) == len(exp.data.train)
    assert np.allclose([float(v) for v in rows[3].split(",")[2:4]], saved["mean"][3], rtol=1e-6)


def test_cli_sample_out_writes_the_draws_of_pyro_lvm_sample(trained_run, tmp_path):
    from pyro_lvm.cli import main

    out = tmp_path / "s.npz"
    assert main(["sample", str(trained_run), "--num", "9", "--what", "latents", "--out", str(out)]) == 0
    expected = pyro_lvm.sample(pyro_lvm.load(trained_run), 9, return_="latents")
    assert np.array_equal(np.load(out)["samples"], expected.numpy())
    assert main(["encode", str(trained_run), "--out", str(tmp_path / "z.txt")]) == 2


def test_runs_table_lists_the_differing_keys_and_the_recorded_metrics(trained_run, tmp_path, capsys):
    from pyro_lvm.cli import main
    from pyro_lvm.studies.runs_table import format_table, runs_table

    for name, seed in (("a", 0), ("b", 5)):  # two copies that differ in train.seed only
        (tmp_path / name).mkdir()
        for p in trained_run.iterdir():
            (tmp_path / name / p.name).write_bytes(p.read_bytes())
        config = re.sub(r"(?m)^seed = 0$", f"seed = {seed}", (tmp_path / name / "config.toml").read_text(), count=1)
        (tmp_path / name / "config.toml").write_text(config)
    rows = runs_table([tmp_path])
    evaluation = json.loads((trained_run / "evaluation.json").read_text())
    assert [r["run"] for r in rows] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert [r["data.seed"] if "data.seed" in r else r["train.seed"] for r in rows] == [0, 5]
    assert "data.path" not in rows[0] and rows[0]["log_px"] == evaluation["log_px"]["mean"]
    assert rows[1]["step"] == 6 and rows[1]["active_units"] is None
    assert json.loads(format_table(rows, "json")) == rows
    assert format_table(rows, "csv").splitlines()[0].startswith("run,")
    assert main(["runs", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "log p̂(x)" in out and f"{evaluation['log_px']['mean']:.3f} ± " in out
    assert main(["runs", str(tmp_path / "nothing")]) == 2
