"""Datasets (a registry), splits, binarization and index-carrying batches."""

from pyro_lvm.data.batches import Batch, Batches
from pyro_lvm.data.datasets import DATASETS, Dataset, Split, load_dataset
from pyro_lvm.data.quadrants import quadrant_mask

__all__ = ["DATASETS", "Batch", "Batches", "Dataset", "Split", "load_dataset", "quadrant_mask"]
