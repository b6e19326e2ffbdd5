"""``pyro-lvm sweep``: every combination of the grid (and seeds) trained and evaluated into its own folder, one
table of them, finished runs reused on a rerun, bad grids refused in one line."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_toml

from pyro_lvm.cli import main
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.studies.sweep import parse_grid, plan, split_values


def test_values_split_at_commas_outside_brackets_and_quotes():
    assert split_values("1,2, 3") == ["1", "2", "3"]
    assert split_values('[64,64],[8], "a,b"') == ["[64,64]", "[8]", '"a,b"']


def test_the_plan_is_every_combination_with_each_seed():
    runs = plan(parse_grid(["model.latent_dim=1,2", "optim.lr=0.01,0.001"]), 2, 5)
    assert len(runs) == 8 and len({name for name, _ in runs}) == 8
    assert runs[0] == ("latent_dim=1,lr=0.01,seed=5", ["model.latent_dim=1", "optim.lr=0.01", "train.seed=5"])
    assert runs[-1][1] == ["model.latent_dim=2", "optim.lr=0.001", "train.seed=6"]


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        (["latent_dim=1,2"], "is not SECTION.KEY=V1,V2"),
        (["model.latent_dim=1,,2"], "has an empty value"),
        (["model.latent_dim=1", "model.latent_dim=2"], "names model.latent_dim twice"),
        ([], "at least one --grid"),
    ],
)
def test_a_bad_grid_is_one_line(grid, words):
    with pytest.raises(PyroLVMError, match=words):
        parse_grid(grid)


def test_sweep_trains_evaluates_tabulates_and_reuses_finished_runs(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_toml(4) + "[eval]\nnum_samples = 5\nnum_points = 10\n")
    argv = ["sweep", str(config), "--grid", "model.latent_dim=1,2", "--seeds", "2", "--out", str(tmp_path / "sw")]
    argv += ["--format", "json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert json.loads(out[out.index("[\n") :]) == table and out.count("== run ") == 4
    assert len(table) == 4
    assert {(r["model.latent_dim"], r["train.seed"]) for r in table} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert all(r["step"] == 4 and r["log_px"] is not None for r in table)
    assert "train.out_dir" not in table[0]  # the run column names the folder
    checkpoints = sorted((tmp_path / "sw").glob("*/checkpoint.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    assert main(argv) == 0  # a rerun reuses every finished run
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps


def test_a_grid_value_the_config_refuses_stops_before_any_run(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_toml(4))
    code = main(["sweep", str(config), "--grid", "model.latent_dim=2,-1", "--out", str(tmp_path / "sw")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "latent_dim" in err
    assert not (tmp_path / "sw").exists()  # every value is checked before anything is written
