"""Property-based fuzzing of everything a user hands us as text or bytes: config documents, --set strings, config
files, checkpoints and IDX data files. Property: the result is valid, or a PyroLVMError of one line (which the CLI
prints as ``error: ...`` with exit status 2); never another exception. Derandomized: the same cases every run."""

import gzip

import numpy as np
import pytest
from helpers import data_options, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_lvm import config
from pyro_lvm.data import load_dataset
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import SECTIONS
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECTION_NAMES = [*SECTIONS, "train", "eval", "baseline", "compare", "plugins"]
KEYS = sorted(
    {k for r in SECTIONS.values() for n in r.names() for k in r.schema(n).model_fields}
    | {k for s in ("train", "eval", "baseline", "compare") for k in type(getattr(config.Config(), s)).model_fields}
)
NAMES = sorted({n for r in SECTIONS.values() for n in r.names()})
scalars = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(NAMES + ["", "none", "label", "static", "auto", "on", "cuda", "float64"]),
    st.text(max_size=8),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
documents = st.dictionaries(
    st.one_of(st.sampled_from(SECTION_NAMES), st.text(max_size=5)),
    st.one_of(st.dictionaries(keys, values, max_size=4), values),
    max_size=4,
)


def _one_line_or_valid(fn, *args):
    try:
        return fn(*args)
    except PyroLVMError as err:
        assert str(err) and "\n" not in str(err), repr(err)
        return None


@settings(FUZZ, max_examples=300)
@given(documents)
def test_config_documents(raw):
    cfg = _one_line_or_valid(config.from_dict, raw)
    if cfg is not None:  # what validates also saves and reloads to the same config
        assert config.from_dict(config.to_dict(cfg)) == cfg


@settings(FUZZ, max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SECTION_NAMES + ["x"]), keys, st.one_of(st.text(max_size=10), st.sampled_from(NAMES))
        ).map(lambda t: f"{t[0]}.{t[1]}={t[2]}")
        | st.text(max_size=15),
        max_size=3,
    )
)
def test_set_strings(overrides):
    _one_line_or_valid(lambda o: config.from_dict(config.apply_overrides({}, o)), overrides)


@settings(FUZZ, max_examples=100)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_config_files(tmp_path, data):
    (tmp_path / "c.toml").write_bytes(data)
    _one_line_or_valid(config.load, tmp_path / "c.toml")


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    train(Experiment.from_config(tiny_config(train={"steps": 2, "checkpoint_every": 2})), folder)
    return (folder / CHECKPOINT).read_bytes()


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_checkpoints(tmp_path, real_checkpoint, data):
    blob = bytearray(real_checkpoint)
    cut = data.draw(st.integers(0, len(blob)))
    flips = data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=4))
    for i in flips:
        blob[i] ^= 0xFF
    (tmp_path / "c.pt").write_bytes(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))
    state = _one_line_or_valid(checkpoint.load, tmp_path / "c.pt")
    if state is not None:
        assert checkpoint.first_nonfinite(checkpoint.tensors(state["model"])) is None


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@settings(FUZZ, max_examples=40)
@given(st.data())
def test_idx_files(tmp_path_factory, data):
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in [("train", 12), ("t10k", 5)]:
        files[f"{prefix}-images-idx3-ubyte.gz"] = _idx(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = _idx(rng.integers(0, 10, (n,)))
    victim = data.draw(st.sampled_from(sorted(files)))
    how = data.draw(st.sampled_from(["truncate", "not gzip", "bad magic", "short labels", "wrong size"]))
    blob = files[victim]
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "not gzip":
        blob = data.draw(st.binary(max_size=64))
    elif how == "bad magic":
        raw = bytearray(gzip.decompress(blob))
        raw[2] = data.draw(st.integers(0, 255))
        raw[3] = data.draw(st.integers(0, 255))
        blob = gzip.compress(bytes(raw))
    elif how == "short labels":
        blob = _idx(rng.integers(0, 10, (3,))) if "labels" in victim else blob
    else:
        blob = _idx(rng.integers(0, 256, (4, 20, 20))) if "images" in victim else blob
    files[victim] = blob
    src = tmp_path_factory.mktemp("idx")
    for name, content in files.items():
        (src / name).write_bytes(content)
    ds = _one_line_or_valid(load_dataset, data_options(name="fashion_mnist", root=str(src), binarize="none"))
    if ds is not None:
        assert ds.num_features == 784 and len(ds.train.x) == len(ds.train.y)


@settings(FUZZ, max_examples=150)
@given(st.binary(max_size=300), st.sampled_from([".npy", ".npz"]), st.booleans())
def test_array_files(tmp_path, blob, suffix, npy_header):
    """Random bytes (behind a valid .npy magic string, or not) as the arrays dataset's file."""
    path = tmp_path / f"f{suffix}"
    path.write_bytes((b"\x93NUMPY\x01\x00" if npy_header else b"") + blob)
    _one_line_or_valid(load_dataset, data_options(name="arrays", path=str(path), binarize="none"))
