"""``pyro-lvm latents RUN``: interpolation and traversal figures written into the run folder, one-line refusals."""

from __future__ import annotations

import pytest
from helpers import tiny_config

import pyro_lvm
from pyro_lvm.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("latents") / "run"
    with pyro_lvm.scope():
        pyro_lvm.train(pyro_lvm.Experiment.from_config(tiny_config(train={"steps": 4})), run, figures=False)
    return run


def test_the_figures_are_written_into_the_run_folder(run_dir, capsys):
    argv = ["latents", str(run_dir), "--interpolate", "0", "1", "--interpolate", "2", "3", "--traverse", "5"]
    assert main([*argv, "--steps", "3"]) == 0
    out = capsys.readouterr().out
    for name in ("interpolation.png", "traversal.png"):
        assert (run_dir / name).stat().st_size > 0 and f"wrote {run_dir / name}" in out


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([], "ask for a figure"),
        (["--traverse", "100000"], "row 100000 is not in the split"),
    ],
)
def test_a_request_it_cannot_draw_is_one_line(run_dir, capsys, extra, words):
    assert main(["latents", str(run_dir), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
