"""A user's own data, read whole into memory (data larger than memory is out of scope):

- ``arrays``: a ``.npy`` of x (N, ...) with an optional ``.npy`` of integer labels, or one ``.npz`` holding both
  (keys ``x_key``, ``y_key``). Rows are flattened; (N, H, W) or (N, C, H, W) arrays give the image shape, or set
  ``image_shape``.
- ``image_folder``: torchvision's ``ImageFolder`` layout, ``root/<class>/<image>``: class sub-folders give the labels
  (sorted names -> 0..K-1); grey or RGB; every image the same size, or brought to ``size`` by resizing or a
  centre crop. Pixels become k/255 floats, rows flattened in (C, H, W) order.

Every problem with the files is one line naming it and the fix; splits, binarization and indices are as for every
dataset.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from pyro_lvm.data.datasets import DataOptions, Split
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.registry import DATASETS, MAX_WIDTH

Side = Annotated[int, Field(gt=0, le=MAX_WIDTH)]


class ArraysOptions(DataOptions):
    path: str  # a .npy of x, or a .npz holding x (and labels)
    labels: str | None = None  # a .npy of integer labels (N,), beside a .npy of x
    x_key: str = "x"  # the arrays' names inside a .npz
    y_key: str = "y"
    image_shape: list[Side] | None = Field(None, min_length=2, max_length=3)  # (H, W) or (C, H, W)
    num_classes: int | None = Field(None, gt=0)  # default: max label + 1


class ImageFolderOptions(DataOptions):
    root: str  # root/<class>/<image files>
    mode: Literal["gray", "rgb"] = "gray"
    size: list[Side] | None = Field(None, min_length=2, max_length=2)  # (H, W); default: the images' own (all equal)
    fit: Literal["resize", "crop"] = "resize"  # how images reach ``size``: resize, or a centre crop


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PyroLVMError(f"{what} file {str(path)!r} not found; set data.path (and data.labels)") from None
    except ValueError as err:
        if "allow_pickle" in str(err):  # an object array: ragged rows or mixed types
            raise PyroLVMError(
                f"{what} file {str(path)!r} holds an object array; save rows of equal length as one numeric array "
                "(np.save(path, np.stack(rows)))"
            ) from None
        raise PyroLVMError(
            f"could not read {what} file {str(path)!r}: {err}; write it with np.save / np.savez"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise PyroLVMError(
            f"could not read {what} file {str(path)!r}: {err}; write it with np.save / np.savez"
        ) from None


def _member(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]  # read lazily: an object array fails here
    except ValueError as err:
        what = "is an object array; save rows of equal length as one numeric array (np.stack(rows))"
        what = what if "allow_pickle" in str(err) else f"could not be read ({err}); write it with np.savez"
        raise PyroLVMError(f"array {key!r} in {str(path)!r} {what}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise PyroLVMError(
            f"array {key!r} in {str(path)!r} could not be read ({err}); write it with np.savez"
        ) from None


def _labels(y: np.ndarray, n: int, num_classes: int | None, where: str) -> tuple[torch.Tensor, int]:
    if y.shape != (n,):
        raise PyroLVMError(f"labels in {where} have shape {y.shape} but x has {n} rows; save labels of shape (N,)")
    if not np.issubdtype(y.dtype, np.integer):
        raise PyroLVMError(f"labels in {where} are {y.dtype}, not integers; save class indices 0..K-1")
    k = num_classes if num_classes is not None else int(y.max()) + 1
    if y.min() < 0 or y.max() >= k:
        raise PyroLVMError(
            f"labels in {where} run from {int(y.min())} to {int(y.max())}, outside 0..{k - 1}; "
            "use class indices 0..K-1 (and data.num_classes = K)"
        )
    return torch.as_tensor(y, dtype=torch.long), k


@DATASETS.register("arrays", ArraysOptions)
def _arrays(cfg: ArraysOptions):
    path = Path(cfg.path).expanduser()
    if path.suffix == ".npz":
        archive = _load_npy(path, "data")
        keys = list(archive.keys())
        if cfg.x_key not in keys:
            raise PyroLVMError(
                f"{str(path)!r} has no array {cfg.x_key!r} (it holds {', '.join(keys) or 'nothing'}); "
                "set data.x_key (and data.y_key)"
            )
        x = _member(archive, cfg.x_key, path)
        y = _member(archive, cfg.y_key, path) if cfg.y_key in keys else None
        if cfg.labels is not None:
            raise PyroLVMError("data.labels names a .npy of labels beside a .npy of x; a .npz holds them (data.y_key)")
    else:
        x = _load_npy(path, "data")
        y = None if cfg.labels is None else _load_npy(Path(cfg.labels).expanduser(), "labels")
    if x.ndim < 2 or len(x) == 0:
        raise PyroLVMError(f"x in {str(path)!r} has shape {x.shape}; it needs rows: (N, P), (N, H, W) or (N, C, H, W)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.issubdtype(x.dtype, np.complexfloating):
        raise PyroLVMError(f"x in {str(path)!r} is {x.dtype}, not real numbers; save a real numeric array")
    bad = int((~np.isfinite(x)).sum()) if np.issubdtype(x.dtype, np.floating) else 0
    if bad:
        raise PyroLVMError(f"x in {str(path)!r} holds {bad} NaN or infinite value(s); remove or impute them first")
    shape = tuple(cfg.image_shape) if cfg.image_shape else (tuple(x.shape[1:]) if x.ndim in (3, 4) else None)
    flat = torch.as_tensor(x.reshape(len(x), -1)).float()
    if shape is not None and int(np.prod(shape)) != flat.shape[1]:
        raise PyroLVMError(
            f"data.image_shape {list(shape)} holds {int(np.prod(shape))} values but a row of x has {flat.shape[1]}"
        )
    if y is None:
        labels, k = torch.zeros(len(flat), dtype=torch.long), 1
    else:
        labels, k = _labels(y, len(flat), cfg.num_classes, repr(str(cfg.labels or path)))
    return Split(flat, labels), None, shape, k


@DATASETS.register("image_folder", ImageFolderOptions)
def _image_folder(cfg: ImageFolderOptions):
    from PIL import Image
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import functional as TF

    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise PyroLVMError(f"image folder {str(root)!r} not found; set data.root to a folder of class sub-folders")
    try:
        folder = ImageFolder(str(root), loader=lambda p: p)  # paths only: reading is below, with our own checks
    except (FileNotFoundError, RuntimeError) as err:
        raise PyroLVMError(f"no images under {str(root)!r} ({err}); put images in root/<class>/") from None
    images, sizes = [], set()
    for path, _ in folder.samples:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if cfg.mode == "gray" else "RGB")
                if cfg.size is not None:
                    h, w = cfg.size
                    if cfg.fit == "crop" and (img.height < h or img.width < w):
                        raise PyroLVMError(
                            f"{path!r} is {img.height}x{img.width}, smaller than data.size {h}x{w}: a crop cannot "
                            "reach it; use data.fit = 'resize' or a smaller size"
                        )
                    img = TF.resize(img, [h, w]) if cfg.fit == "resize" else TF.center_crop(img, [h, w])
                tensor = TF.pil_to_tensor(img)  # (C, H, W) uint8
        except (OSError, ValueError) as err:
            raise PyroLVMError(f"could not read image {path!r}: {err}; remove it or replace it") from None
        sizes.add(tuple(tensor.shape[1:]))
        images.append(tensor)
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
        raise PyroLVMError(f"images under {str(root)!r} differ in size ({listed}); set data.size = [H, W]")
    x = torch.stack(images).float() / 255  # (N, C, H, W)
    shape = tuple(x.shape[2:]) if cfg.mode == "gray" else tuple(x.shape[1:])
    y = torch.as_tensor(folder.targets, dtype=torch.long)
    return Split(x.reshape(len(x), -1), y), None, shape, len(folder.classes)
