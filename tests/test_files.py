"""A user's own files: ``arrays`` (.npy / .npz) and ``image_folder`` (class sub-folders of PNGs) load with labels and
image shapes, run every command through the CLI, and bad files stop with one line before anything is written."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_lvm import config
from pyro_lvm.data.datasets import load_dataset
from pyro_lvm.errors import PyroLVMError

REPO = Path(__file__).resolve().parent.parent
TINY = ["train.steps=30", "train.progress=false", "eval.num_samples=20", "eval.num_points=10", "model.hidden=[16]"]


def cli(*args, cwd, code=0):
    out = subprocess.run([sys.executable, "-m", "pyro_lvm.cli", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == code, out.stderr[-3000:]
    return out


def write_pngs(root: Path, mode: str = "RGB", sizes=((12, 10),), per_class: int = 15) -> Path:
    """Two classes of random images: class 'dark' below grey, class 'light' above it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            channels = (h, w, 3) if mode == "RGB" else (h, w)
            pixels = rng.integers(128 * k, 128 * k + 128, channels).astype(np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.png")
    return root


def data_config(**data):
    return config.from_dict({"data": {"binarize": "none", **data}}).data


def test_arrays_npz_and_npy_pairs_load_with_labels_and_image_shape(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 3, 4, 5)).astype(np.float32), rng.integers(0, 3, 50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(data_config(name="arrays", path=str(tmp_path / "d.npz")))
    assert ds.image_shape == (3, 4, 5) and ds.num_features == 60 and ds.num_classes == 3
    rows = len(ds.train) + len(ds.val) + len(ds.test)
    assert rows == 50 and set(ds.train.y.tolist()) <= {0, 1, 2}
    np.save(tmp_path / "x.npy", x.reshape(50, -1))
    np.save(tmp_path / "y.npy", y)
    flat = load_dataset(data_config(name="arrays", path=str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy")))
    assert flat.image_shape is None and torch.equal(flat.train.x, ds.train.x)  # same rows, same split seed


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: np.savez(d / "f.npz", pixels=np.zeros((5, 4))), "has no array 'x' (it holds pixels)"),
        (
            lambda d: np.save(d / "f.npy", np.array([np.zeros(3), np.zeros(4)], dtype=object), allow_pickle=True),
            "object array",
        ),
        (lambda d: np.save(d / "f.npy", np.array([[0.1, np.nan], [0.2, np.inf]])), "2 NaN or infinite"),
        (lambda d: np.savez(d / "f.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 2, 5])), "outside 0..2"),
        (lambda d: np.savez(d / "f.npz", x=np.zeros((4, 2)), y=np.array([0, 1, -1, 1])), "outside 0..1"),
        (lambda d: np.savez(d / "f.npz", x=np.zeros((4, 2)), y=np.array([0.0, 1, 1, 0])), "not integers"),
    ],
)
def test_bad_arrays_are_one_line(tmp_path, make, message):
    make(tmp_path)
    path = tmp_path / ("f.npz" if (tmp_path / "f.npz").exists() else "f.npy")
    extra = {"num_classes": 3} if "outside 0..2" in message else {}
    with pytest.raises(PyroLVMError, match=re.escape(message)) as err:
        load_dataset(data_config(name="arrays", path=str(path), **extra))
    assert "\n" not in str(err.value)


def test_bad_image_folders_are_one_line(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(PyroLVMError, match="no images under"):
        load_dataset(data_config(name="image_folder", root=str(tmp_path / "empty")))
    mixed = write_pngs(tmp_path / "mixed", "L", sizes=((8, 8), (9, 8)), per_class=4)
    with pytest.raises(PyroLVMError, match=r"differ in size \(8x8, 9x8\); set data.size"):
        load_dataset(data_config(name="image_folder", root=str(mixed)))
    ds = load_dataset(data_config(name="image_folder", root=str(mixed), size=[6, 6], fit="crop"))
    assert ds.image_shape == (6, 6)
    with pytest.raises(PyroLVMError, match="smaller than data.size 10x10"):
        load_dataset(data_config(name="image_folder", root=str(mixed), size=[10, 10], fit="crop"))


@pytest.mark.slow
def test_a_folder_of_rgb_pngs_runs_every_command(tmp_path):
    """Two classes of 12x10 RGB PNGs written here: train, resume, evaluate, sample (also a label CVAE), compare."""
    root = write_pngs(tmp_path / "pngs")
    data = [f"--set=data.root={root}", "--set=data.name=image_folder", "--set=data.mode=rgb"]
    data += ["--set=data.binarize=none", "--set=likelihood.name=discretized_logistic"]
    sets = [*data, *[f"--set={o}" for o in TINY]]
    run = tmp_path / "run"
    cli("train", "experiments/digits_vae.toml", *sets, f"--set=train.out_dir={run}", cwd=REPO)
    cli("train", "--resume", str(run), "--set=train.steps=40", cwd=REPO)
    out = cli("evaluate", str(run), cwd=REPO)
    assert "bits/dim" in out.stdout
    cli("sample", str(run), cwd=REPO)
    assert (run / "samples.png").is_file()
    label = [*sets, "--set=model.name=cvae", "--set=model.condition=label", "--set=prior.name=conditional"]
    cli("train", "experiments/digits_vae.toml", *label, f"--set=train.out_dir={tmp_path / 'cvae'}", cwd=REPO)
    cli("sample", str(tmp_path / "cvae"), "--condition=1", cwd=REPO)
    compare = [*sets, "--set=compare.guides=['amortized', 'per_datapoint']", "--set=compare.gap_points=10"]
    compare += [
        "--set=compare.qstar_max_steps=50",
        "--set=compare.refine_ks=[0]",
        f"--set=compare.out_dir={tmp_path / 'cmp'}",
    ]
    out = cli("compare", "experiments/digits_compare.toml", *compare, cwd=REPO)
    assert "amortization gap" in out.stdout


def test_a_bad_folder_stops_the_cli_before_anything_is_written(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    run = tmp_path / "run"
    sets = [f"--set=data.root={tmp_path / 'empty'}", "--set=data.name=image_folder", "--set=data.binarize=none"]
    out = cli("train", "experiments/digits_vae.toml", *sets, f"--set=train.out_dir={run}", cwd=REPO, code=2)
    assert out.stderr.count("\n") == 1 and "no images under" in out.stderr and "Traceback" not in out.stderr
    assert not run.exists()
