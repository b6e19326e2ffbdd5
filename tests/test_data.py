import gzip

import numpy as np
import pytest
import torch
from helpers import data_options

from pyro_lvm.data import Batches, load_dataset
from pyro_lvm.errors import PyroLVMError


def test_digits_splits_shapes_ranges():
    ds = load_dataset(data_options(binarize="none"))
    assert ds.image_shape == (8, 8) and ds.num_features == 64 and ds.num_classes == 10
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert abs(len(ds.test) - 0.2 * 1797) <= 1
    for s in (ds.train, ds.val, ds.test):
        assert s.x.dtype == torch.float32 and s.x.min() >= 0 and s.x.max() <= 1
        assert set(s.y.unique().tolist()) <= set(range(10))
    # deterministic, disjoint splits: no training image reappears in test
    again = load_dataset(data_options(binarize="none"))
    assert torch.equal(ds.test.x, again.test.x)
    train_rows = {tuple(r) for r in ds.train.x.tolist()}
    dup_free = sum(tuple(r) in train_rows for r in ds.test.x.tolist())
    assert dup_free < 5  # digits holds a handful of exact duplicate images, nothing more


def test_binarization_modes():
    static = load_dataset(data_options(binarize="static"))
    assert set(static.train.x.unique().tolist()) == {0.0, 1.0} and static.binary
    dynamic = load_dataset(data_options(binarize="dynamic"))
    assert len(dynamic.training_rows.x.unique()) > 2  # grey, sampled per batch
    assert set(dynamic.test.x.unique().tolist()) == {0.0, 1.0}  # sampled once
    assert set(dynamic.train.x.unique().tolist()) == {0.0, 1.0}  # sampled once, for evaluation
    batch = Batches(dynamic.training_rows, 64, seed=0, dynamic_binarize=True).batch(0)
    assert set(batch.x.unique().tolist()) <= {0.0, 1.0}


def test_batches_carry_indices_and_cover_each_epoch():
    ds = load_dataset(data_options(max_train=100))
    batches = Batches(ds.train, 32, seed=5)
    assert batches.steps_per_epoch == 4
    seen = torch.cat([batches.batch(s).idx for s in range(4)])
    assert sorted(seen.tolist()) == list(range(100))
    b = batches.batch(1)
    assert torch.equal(b.x, ds.train.x[b.idx]) and torch.equal(b.y, ds.train.y[b.idx])
    assert torch.equal(Batches(ds.train, 32, seed=5).batch(6).idx, batches.batch(6).idx)  # order from (seed, epoch)


def test_missing_dataset_is_one_line(tmp_path):
    with pytest.raises(PyroLVMError) as info:
        load_dataset(data_options(name="mnist", root=str(tmp_path)))
    assert "not found" in str(info.value) and "data.download" in str(info.value) and "\n" not in str(info.value)


def _write_idx(path, array: np.ndarray):
    """IDX writer for test fixtures (the loader itself uses torchvision's reader)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_gzipped_idx(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in [("train", 30), ("t10k", 10)]:
        _write_idx(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    ds = load_dataset(data_options(name="fashion_mnist", root=str(src), binarize="none", val_fraction=0.1))
    assert ds.num_features == 784 and len(ds.test) == 10 and len(ds.train) + len(ds.val) == 30
    assert ds.train.x.min() >= 0 and ds.train.x.max() <= 1
