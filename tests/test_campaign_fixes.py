"""Regressions found by benchmarks/bad_input_campaign.py, each now one line instead of a traceback or a silent
acceptance."""

import gzip

import numpy as np
import pytest
import torch
from helpers import data_options, tiny_config

from pyro_lvm import config
from pyro_lvm.data import load_dataset
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _idx_root(tmp_path, labels=None, drop=None):
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 12), ("t10k", 5)]:
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        y = labels if labels is not None and prefix == "train" else rng.integers(0, 10, (n,))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(y))
    if drop:
        (tmp_path / drop).unlink()
    return data_options(name="fashion_mnist", root=str(tmp_path), binarize="none")


def test_idx_labels_beyond_the_ten_classes_are_refused(tmp_path):
    with pytest.raises(PyroLVMError, match="labels run from 200 to 200, not 0..9"):
        load_dataset(_idx_root(tmp_path, labels=np.full(12, 200)))


def test_a_named_data_root_is_never_swapped_for_another_copy(tmp_path):
    """A data.root lacking one file (or missing) read Debian's Fashion-MNIST instead, where that is installed."""
    with pytest.raises(PyroLVMError, match="IDX files not found under"):
        load_dataset(_idx_root(tmp_path, drop="t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(PyroLVMError, match="IDX files not found under"):
        load_dataset(data_options(name="fashion_mnist", root=str(tmp_path / "nowhere")))


def test_complex_arrays_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((20, 4), dtype=np.complex64))
    with pytest.raises(PyroLVMError, match="complex64, not real numbers"):
        load_dataset(data_options(name="arrays", path=str(tmp_path / "x.npy")))


def test_a_bernoulli_likelihood_on_values_outside_0_1_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32))
    cfg = tiny_config(data={"name": "arrays", "path": str(tmp_path / "x.npy"), "binarize": "none"},
                      train={"pyro_validation": False})  # fmt: skip
    with pytest.raises(PyroLVMError, match=r"outside \[0, 1\], under a bernoulli likelihood"):
        Experiment.from_config(cfg)
    config.with_overrides(cfg, ["likelihood.name=gaussian"])  # what the message offers builds
    Experiment.from_config(config.with_overrides(cfg, ["likelihood.name=gaussian"]))


def test_negative_refinement_steps_are_refused():
    with pytest.raises(PyroLVMError, match="compare.refine_ks"):
        config.from_dict({"compare": {"refine_ks": [0, -1]}})


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("step", "abc", "has step 'abc', not a count"),
        ("step", -3, "has step -3"),
        ("history", [1, 2], "damaged history"),
        ("optim", [1], "no state dicts"),
    ],
)
def test_checkpoints_with_damaged_fields_are_one_line(tmp_path, key, value, words):
    train(Experiment.from_config(tiny_config(train={"steps": 2, "checkpoint_every": 2})), tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    state[key] = value
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(PyroLVMError, match=words):
        checkpoint.load(tmp_path / CHECKPOINT)
    with pytest.raises(PyroLVMError, match=words):  # a resume says the same
        train(Experiment.from_config(tiny_config(train={"steps": 4})), tmp_path, resume=True)


def test_an_empty_guide_list_and_an_lr_beyond_the_dtype_are_refused():
    with pytest.raises(PyroLVMError, match="compare.guides"):
        config.from_dict({"compare": {"guides": []}})  # compare trained nothing, then failed on its empty table
    with pytest.raises(PyroLVMError, match=r"optim.lr = 1e\+300 is beyond what float32 can hold"):
        Experiment.from_config(tiny_config(optim={"lr": 1e300}))  # torch's step overflowed converting it
    Experiment.from_config(tiny_config(optim={"lr": 1e300}, train={"dtype": "float64"}))
