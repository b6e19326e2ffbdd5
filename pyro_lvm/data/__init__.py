"""Datasets (a registry), splits, binarization and index-carrying batches."""

from pyro_lvm.data import files  # noqa: F401  (registers arrays and image_folder)
from pyro_lvm.data.batches import Batch, Batches
from pyro_lvm.data.datasets import DataOptions, Dataset, Split, load_dataset
from pyro_lvm.data.quadrants import quadrant_mask
from pyro_lvm.data.tensors import from_tensors

__all__ = ["Batch", "Batches", "DataOptions", "Dataset", "Split", "from_tensors", "load_dataset", "quadrant_mask"]
