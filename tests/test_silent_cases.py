"""The last silent acceptances of the bad-input campaign, each now a one-line refusal or a one-line notice: a batch
larger than the data (notice), a label CVAE on one class, a Gaussian likelihood on binarized data and an empty
config file (refusals). Each through the CLI (``pyro_lvm.cli.main``) and from Python."""

from __future__ import annotations

import sys
import warnings

import pytest
from helpers import tiny_config, tiny_toml

import pyro_lvm
from pyro_lvm import config
from pyro_lvm.cli import main
from pyro_lvm.data.batches import Batches
from pyro_lvm.errors import PyroLVMError


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The CLI run in ``tmp_path`` (which it puts on sys.path) with a tiny config ``c.toml``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "c.toml").write_text(tiny_toml(2))
    return tmp_path


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    return code, capsys.readouterr().err.splitlines()


def _refused(argv: list[str], capsys, words: str) -> None:
    code, lines = _cli(argv, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


def test_a_batch_larger_than_the_data_is_named_once(folder, capsys):
    code, lines = _cli(["train", "c.toml", "--set", "train.batch_size=100000"], capsys)
    rows = len(pyro_lvm.Experiment.from_config(config.load("c.toml")).data.train)  # data.max_train = 100
    assert code == 0 and rows == 100
    notes = [line for line in lines if line.startswith("note: ")]
    assert notes == [
        f"note: train.batch_size = 100000 is more than the {rows} training rows: each step uses all {rows} "
        f"(full-batch gradients, one step per epoch); set train.batch_size <= {rows} to choose the batch"
    ], lines
    code, lines = _cli(["train", "c.toml", "--set", "train.out_dir=b32"], capsys)  # batch 32 of the same rows
    assert code == 0 and not [line for line in lines if "training rows" in line]


def test_a_batch_larger_than_the_data_from_python_warns_and_takes_every_row():
    exp = pyro_lvm.Experiment.from_config(tiny_config(train={"batch_size": 100000, "steps": 2}))
    rows = len(exp.data.train)
    with pytest.warns(UserWarning, match=f"train.batch_size = 100000 is more than the {rows} training rows"):
        pyro_lvm.train(exp)
    batches = Batches(exp.data.train, 100000, seed=0)  # the consequence the notice names: every row, every step
    assert sorted(batches.batch(0).idx.tolist()) == list(range(rows)) and batches.steps_per_epoch == 1
    exact = pyro_lvm.Experiment.from_config(tiny_config(train={"batch_size": rows, "steps": 2}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyro_lvm.train(exact)
    assert not [w for w in caught if "training rows" in str(w.message)]


LABEL_ON_ONE_CLASS = {
    "data": {"name": "linear_gaussian", "binarize": "none"},
    "model": {"name": "cvae", "condition": "label"},
    "likelihood": {"name": "gaussian"},
}


def test_a_label_cvae_on_one_class_is_refused(folder, capsys):
    sets = ["data.name=linear_gaussian", "data.binarize='none'", "likelihood.name=gaussian", "model.name=cvae"]
    argv = ["train", "c.toml", *(a for s in [*sets, "model.condition=label"] for a in ("--set", s))]
    _refused(argv, capsys, "model.condition = 'label' needs a dataset with at least 2 classes; this one has 1")
    with pytest.raises(PyroLVMError, match="at least 2 classes; this one has 1, so c would be the same"):
        pyro_lvm.Experiment.from_config(tiny_config(**LABEL_ON_ONE_CLASS))
    cfg = tiny_config(**{**LABEL_ON_ONE_CLASS, "model": {"name": "cvae", "condition": "quadrants"}})
    with pytest.raises(PyroLVMError, match="needs an image dataset"):  # the other condition keeps its own check
        pyro_lvm.Experiment.from_config(cfg)


@pytest.mark.parametrize("binarize", ["static", "dynamic"])
def test_a_gaussian_likelihood_on_binarized_data_is_refused(folder, capsys, binarize):
    words = f"likelihood.name = 'gaussian' on data.binarize = '{binarize}'"
    _refused(["train", "c.toml", "--set", "likelihood.name=gaussian", "--set", f"data.binarize={binarize}"],
             capsys, words)  # fmt: skip
    with pytest.raises(PyroLVMError, match=words):
        config.from_dict({"likelihood": {"name": "gaussian"}, "data": {"binarize": binarize}})
    grey = config.from_dict({"likelihood": {"name": "gaussian"}, "data": {"binarize": "none"}})
    assert grey.likelihood.name == "gaussian"  # what the message offers is accepted
    assert config.from_dict({"data": {"binarize": binarize}}).likelihood.name == "bernoulli"


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n\n# and another\n"])
def test_an_empty_config_file_is_refused(folder, capsys, text):
    (folder / "empty.toml").write_text(text)
    _refused(["train", "empty.toml"], capsys, "config file 'empty.toml' is empty (no table or key)")
    _refused(["compare", "empty.toml"], capsys, "is empty")
    with pytest.raises(PyroLVMError, match="is empty"):
        pyro_lvm.load_config(folder / "empty.toml")
    (folder / "defaults.toml").write_text(text + "[train]\n")  # every default, said on purpose
    assert pyro_lvm.load_config(folder / "defaults.toml") == config.from_dict({})
