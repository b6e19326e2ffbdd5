"""Dataset registry: ``digits`` (embedded, offline), ``fashion_mnist`` and ``mnist`` (torchvision IDX readers),
``linear_gaussian`` (synthetic, exact p(x) known). Every loader returns flat float images in [0, 1]."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from pyro_lvm.config import DataConfig
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import Registry


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
    image_shape: tuple[int, int] | None  # (H, W) for image data, None otherwise
    num_classes: int
    binary: bool  # True when x is {0, 1}-valued after binarization
    # dynamic binarization: the grey training images that training batches are drawn from (Bernoulli(x) afresh
    # each batch); ``train`` then holds one fixed binary draw of them, which every evaluation sees
    train_probs: Split | None = None

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
        )


DATASETS: Registry[tuple[Split, Split | None, tuple[int, int] | None, int]] = Registry("dataset")


def _split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Shuffle with a fixed seed, then cut ``fraction`` of the rows off the end."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(split), generator=g)
    n_out = int(round(fraction * len(split)))
    keep, out = perm[: len(split) - n_out], perm[len(split) - n_out :]
    return Split(split.x[keep], split.y[keep]), Split(split.x[out], split.y[out])


@DATASETS.register("digits")
def _digits(cfg: DataConfig):
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


def _cache_root(cfg: DataConfig) -> Path:
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
            shutil.copyfile(source / f"{name}.gz", staged)
            extract_archive(str(staged), str(raw_folder), remove_finished=True)
    return True


def _torchvision_idx(cls_name: str, cfg: DataConfig, debian: Path | None, how_to_get: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _cache_root(cfg)
    raw_folder = root / cls_name / "raw"
    have = all((raw_folder / name).is_file() for name in _IDX_FILES)
    if not have and cfg.root:
        have = _stage_gz_idx(Path(cfg.root), raw_folder)
    if not have and debian is not None:
        have = _stage_gz_idx(debian, raw_folder)
    if not have and not cfg.download:
        raise PyroLVMError(f"{cls_name} IDX files not found under {str(root)!r}; {how_to_get}")
    try:
        train = cls(str(root), train=True, download=cfg.download and not have)
        test = cls(str(root), train=False, download=False)
    except (RuntimeError, OSError, ValueError) as err:
        raise PyroLVMError(f"could not read {cls_name} from {str(root)!r} ({err}); {how_to_get}") from None

    def as_split(ds) -> Split:
        return Split(ds.data.reshape(len(ds.data), -1).float() / 255.0, ds.targets.long())

    return as_split(train), as_split(test), (28, 28), 10


@DATASETS.register("fashion_mnist")
def _fashion_mnist(cfg: DataConfig):
    return _torchvision_idx(
        "FashionMNIST",
        cfg,
        DEBIAN_FASHION_MNIST,
        "run `apt-get install dataset-fashion-mnist`, set data.root to a folder with the four IDX .gz files, "
        "or set data.download = true on a machine that is online",
    )


@DATASETS.register("mnist")
def _mnist(cfg: DataConfig):
    return _torchvision_idx(
        "MNIST",
        cfg,
        None,
        "set data.root to a folder with the four MNIST IDX .gz files, or data.download = true when online",
    )


def linear_gaussian_truth(cfg: DataConfig, dtype: torch.dtype = torch.float64):
    """The linear-Gaussian LVM (``pyro_lvm.analytic``) that the ``linear_gaussian`` dataset samples from."""
    from pyro_lvm.analytic import LinearGaussian

    lg = LinearGaussian.random(latent_dim=2, obs_dim=8, seed=cfg.seed, dtype=torch.float32)
    return LinearGaussian(lg.W.to(dtype), lg.b.to(dtype), lg.s)


@DATASETS.register("linear_gaussian")
def _linear_gaussian(cfg: DataConfig):
    """2,000 samples of a fixed linear-Gaussian LVM: x = W z + b + s * eps (``linear_gaussian_truth``)."""
    x = linear_gaussian_truth(cfg, torch.float32).sample(2000, seed=cfg.seed + 1)
    return Split(x, torch.zeros(len(x), dtype=torch.long)), None, None, 1


def _binarize(cfg: DataConfig, ds: Dataset) -> Dataset:
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


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load ``cfg.name``, split train/val/test with ``cfg.seed``, binarize as configured."""
    train, test, image_shape, num_classes = DATASETS.get(cfg.name)(cfg)
    if test is None:  # no official test split: cut one off with the split seed
        train, test = _split_off(train, cfg.test_fraction, cfg.seed)
    train, val = _split_off(train, cfg.val_fraction, cfg.seed + 1)
    if cfg.max_train is not None:
        train = Split(train.x[: cfg.max_train], train.y[: cfg.max_train])
    if cfg.binarize != "none" and (train.x.min() < 0 or train.x.max() > 1):
        raise PyroLVMError(f"dataset {cfg.name!r} is not in [0, 1]; set data.binarize = 'none'")
    ds = Dataset(cfg.name, train, val, test, image_shape, num_classes, False)
    return _binarize(cfg, ds)
