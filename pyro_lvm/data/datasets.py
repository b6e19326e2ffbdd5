"""Dataset registry: ``digits`` (embedded, offline), ``fashion_mnist`` and ``mnist`` (torchvision IDX readers),
``linear_gaussian`` (synthetic, exact p(x) known); a user's own files: ``arrays`` and ``image_folder``
(``files.py``). Every loader returns flat float rows (images in [0, 1])."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import DATASETS, Options, Seed


class DataOptions(Options):
    """Options every dataset has (the base schema of the ``dataset`` registry): splits and binarization."""

    binarize: Literal["none", "static", "dynamic"] = "static"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # for static binarization
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # datasets without an official test split
    max_train: int | None = Field(None, gt=0)  # keep only the first n training rows (quick runs)
    labelled: int | None = Field(None, gt=0)  # semi-supervised: keep n training labels, class-balanced (labelled.py)
    label_seed: Seed = 0  # which rows keep their label (one draw of data.labelled rows; the splits stay as they are)
    seed: Seed = 0  # the split seed, independent of the training seed


class IdxOptions(DataOptions):  # the IDX datasets (MNIST, Fashion-MNIST) read through torchvision
    root: str | None = None  # folder holding (or receiving) the IDX files
    download: bool = False  # only ever True on purpose: runs must work offline


DATASETS.base = DataOptions


@dataclass
class Split:
    """One split: ``x`` (N, P) float in [0, 1] (or real for synthetic data), ``y`` (N,) long labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Split:
        return Split(self.x.to(device=device, dtype=dtype), self.y.to(device))

    def head(self, n: int | None) -> Split:
        """The first ``n`` rows (all of them when ``n`` is None)."""
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    image_shape: tuple[int, ...] | None  # (H, W) or (C, H, W) for image data (rows flattened in that order)
    num_classes: int
    binary: bool  # True when x is {0, 1}-valued after binarization
    # dynamic binarization: the grey training images that training batches are drawn from (Bernoulli(x) afresh
    # each batch); ``train`` then holds one fixed binary draw of them, which every evaluation sees
    train_probs: Split | None = None
    labelled: torch.Tensor | None = None  # (N,) bool: the training rows whose label training may use (data.labelled)

    @property
    def num_features(self) -> int:
        return self.train.x.shape[1]

    @property
    def training_rows(self) -> Split:
        """What training batches are drawn from: the grey images under dynamic binarization, else ``train``."""
        return self.train if self.train_probs is None else self.train_probs

    @property
    def dynamic(self) -> bool:
        return self.train_probs is not None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Dataset:
        return Dataset(
            self.name,
            self.train.to(device, dtype),
            self.val.to(device, dtype),
            self.test.to(device, dtype),
            self.image_shape,
            self.num_classes,
            self.binary,
            None if self.train_probs is None else self.train_probs.to(device, dtype),
            None if self.labelled is None else self.labelled.to(device),
        )


def _split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Shuffle with a fixed seed, then cut ``fraction`` of the rows off the end."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=g)
    n_out = int(round(fraction * len(split)))
    keep, out = perm[: len(split) - n_out], perm[len(split) - n_out :]
    return Split(split.x[keep], split.y[keep]), Split(split.x[out], split.y[out])


@DATASETS.register("digits")
def _digits(cfg: DataOptions):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0  # (1797, 64), pixel values 0..16
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    return Split(x, y), None, (8, 8), 10


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _cache_root(cfg: DataOptions) -> Path:
    return Path(cfg.root) if cfg.root else Path.home() / ".cache" / "pyro_lvm"


def _stage_gz_idx(source: Path, raw_folder: Path) -> bool:
    """Put gzipped IDX files from ``source`` where torchvision looks for them (it reads the unzipped files)."""
    from torchvision.datasets.utils import extract_archive

    if not all((source / f"{name}.gz").is_file() for name in _IDX_FILES):
        return False
    raw_folder.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        if not (raw_folder / name).is_file():
            staged = raw_folder / f"{name}.gz"
            try:
                shutil.copyfile(source / f"{name}.gz", staged)
                extract_archive(str(staged), str(raw_folder), remove_finished=True)
            except Exception as err:  # noqa: BLE001 - a damaged archive: gzip, EOF, OS errors alike
                for leftover in (staged, raw_folder / name):  # no half-unpacked file is taken for data later
                    leftover.unlink(missing_ok=True)
                raise PyroLVMError(
                    f"could not unpack {str(source / name)}.gz ({type(err).__name__}: {err}); replace the file"
                ) from None
    return True


def _torchvision_idx(cls_name: str, cfg: DataOptions, debian: Path | None, how_to_get: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _cache_root(cfg)
    raw_folder = root / cls_name / "raw"
    have = cached = all((raw_folder / name).is_file() for name in _IDX_FILES)
    if not have and cfg.root:
        have = _stage_gz_idx(Path(cfg.root), raw_folder)
    if not have and debian is not None and not cfg.root:  # a data.root the user names is never swapped for another
        have = _stage_gz_idx(debian, raw_folder)
    if not have and not cfg.download:
        raise PyroLVMError(f"{cls_name} IDX files not found under {str(root)!r}; {how_to_get}")

    def unusable(why: str) -> PyroLVMError:
        if not cached:  # files unpacked just now are dropped, so a replaced archive is unpacked afresh
            for name in _IDX_FILES:
                (raw_folder / name).unlink(missing_ok=True)
        hint = "" if not cached else f" (unpacked earlier in {str(raw_folder)!r}: delete that folder to unpack again)"
        return PyroLVMError(f"could not read {cls_name} from {str(root)!r}{hint}: {why}; {how_to_get}")

    try:
        train = cls(str(root), train=True, download=cfg.download and not have)
        test = cls(str(root), train=False, download=False)
    except Exception as err:  # noqa: BLE001 - torchvision's readers assert on bad headers; any failure is the file's
        raise unusable(f"{type(err).__name__}: {err}") from None

    def as_split(ds) -> Split:
        if ds.data.dim() != 3 or tuple(ds.data.shape[1:]) != (28, 28) or len(ds.data) != len(ds.targets):
            raise unusable(
                f"the files hold {tuple(ds.data.shape)} images and {len(ds.targets)} labels, not (N, 28, 28) images "
                "and N labels"
            )
        if len(ds.targets) and not 0 <= int(ds.targets.min()) <= int(ds.targets.max()) <= 9:
            raise unusable(f"labels run from {int(ds.targets.min())} to {int(ds.targets.max())}, not 0..9")
        return Split(ds.data.reshape(len(ds.data), -1).float() / 255.0, ds.targets.long())

    return as_split(train), as_split(test), (28, 28), 10


@DATASETS.register("fashion_mnist", IdxOptions)
def _fashion_mnist(cfg: DataOptions):
    return _torchvision_idx(
        "FashionMNIST",
        cfg,
        DEBIAN_FASHION_MNIST,
        "run `apt-get install dataset-fashion-mnist`, set data.root to a folder with the four IDX .gz files, "
        "or set data.download = true on a machine that is online",
    )


@DATASETS.register("mnist", IdxOptions)
def _mnist(cfg: DataOptions):
    return _torchvision_idx(
        "MNIST",
        cfg,
        None,
        "set data.root to a folder with the four MNIST IDX .gz files, or data.download = true when online",
    )


def linear_gaussian_truth(cfg: DataOptions, dtype: torch.dtype = torch.float64):
    """The linear-Gaussian LVM (``pyro_lvm.data.analytic``) that the ``linear_gaussian`` dataset samples from."""
    from pyro_lvm.data.analytic import LinearGaussian

    lg = LinearGaussian.random(latent_dim=2, obs_dim=8, seed=cfg.seed, dtype=torch.float32)
    return LinearGaussian(lg.W.to(dtype), lg.b.to(dtype), lg.s)


@DATASETS.register("linear_gaussian")
def _linear_gaussian(cfg: DataOptions):
    """2,000 samples of a fixed linear-Gaussian LVM: x = W z + b + s * eps (``linear_gaussian_truth``)."""
    x = linear_gaussian_truth(cfg, torch.float32).sample(2000, seed=cfg.seed + 1)
    return Split(x, torch.zeros(len(x), dtype=torch.long)), None, None, 1


def _binarize(cfg: DataOptions, ds: Dataset) -> Dataset:
    """static: threshold every split once. dynamic: training batches are fresh Bernoulli(x) draws of the grey
    training images (``Dataset.train_probs``, sampled by ``Batches``); every split, the training rows included, is
    also sampled once with a fixed seed (data.seed + 7), and every evaluation sees those binary images: a Bernoulli
    log-likelihood is only a probability of binary data (the usual practice in the IWAE literature)."""
    if cfg.binarize == "none":
        return ds
    if cfg.binarize == "static":
        return Dataset(
            ds.name,
            *(Split((s.x > cfg.threshold).float(), s.y) for s in (ds.train, ds.val, ds.test)),
            ds.image_shape,
            ds.num_classes,
            True,
        )
    g = torch.Generator().manual_seed(cfg.seed + 7)
    val, test, train = (Split(torch.bernoulli(s.x, generator=g), s.y) for s in (ds.val, ds.test, ds.train))
    return Dataset(ds.name, train, val, test, ds.image_shape, ds.num_classes, True, train_probs=ds.train)


def load_dataset(cfg: DataOptions) -> Dataset:
    """Load ``cfg.name``, split train/val/test with ``cfg.seed``, binarize as configured.

    A registered dataset is a function of its options returning (train, test or None, image_shape or None,
    num_classes) with flat float rows; ``from_tensors`` serves tensors a user already holds."""
    train, test, image_shape, num_classes = DATASETS.get(cfg.name)(cfg)
    return _finish(cfg, train, test, image_shape, num_classes)


def _finish(cfg: DataOptions, train: Split, test: Split | None, image_shape, num_classes: int) -> Dataset:
    if test is None:  # no official test split: cut one off with the split seed
        train, test = _split_off(train, cfg.test_fraction, cfg.seed)
    train, val = _split_off(train, cfg.val_fraction, cfg.seed + 1)
    if cfg.max_train is not None:
        train = Split(train.x[: cfg.max_train], train.y[: cfg.max_train])
    if cfg.binarize != "none" and (train.x.min() < 0 or train.x.max() > 1):
        raise PyroLVMError(f"dataset {cfg.name!r} is not in [0, 1]; set data.binarize = 'none'")
    ds = _binarize(cfg, Dataset(getattr(cfg, "name", "tensors"), train, val, test, image_shape, num_classes, False))
    if cfg.labelled is not None:
        from pyro_lvm.data.labelled import labelled_mask

        ds.labelled = labelled_mask(ds.train.y, cfg.labelled, num_classes, cfg.seed * 1_000_003 + cfg.label_seed)
    return ds
