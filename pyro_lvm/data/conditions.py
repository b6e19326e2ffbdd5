"""What the model conditions on: turn a batch's (x, y) into (target, c).

- ``none``: (x, None), the plain VAE.
- ``label``: (x, one_hot(y)), generate a class on demand. With ``partial`` (the semi-supervised model M2), a
  hidden label (``y = -1``, ``data.labelled.UNLABELLED``) gives a row of zeros: the row is unlabelled.
- ``quadrants``: c = the observed quadrants' pixels, target = the hidden pixels (image completion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pyro_lvm.data.quadrants import quadrant_mask
from pyro_lvm.errors import PyroLVMError


@dataclass
class Condition:
    kind: str
    num_features: int  # P of the full x
    num_classes: int = 0
    mask: torch.Tensor | None = None  # (P,) bool, True where observed (quadrants)
    partial: bool = False  # labels may be hidden (y = -1): M2's unlabelled rows

    @classmethod
    def build(
        cls, kind: str, num_features: int, num_classes: int, image_shape, observed: int, partial: bool = False
    ) -> Condition:
        if kind == "quadrants":
            if image_shape is None:
                raise PyroLVMError("model.condition = 'quadrants' needs an image dataset")
            return cls(kind, num_features, num_classes, quadrant_mask(image_shape, observed))
        if kind == "label" and num_classes < 2:
            # Refused, not noted: c would be one constant one-hot for every row (the VAE with a fixed extra input),
            # and the label CVAE's own checks (per-class generation, KL between class priors) have no two classes.
            raise PyroLVMError(
                f"model.condition = 'label' needs a dataset with at least 2 classes; this one has {num_classes}, so "
                "c would be the same for every row: use model.condition = 'none', or a dataset with labels"
            )
        return cls(kind, num_features, num_classes, partial=partial)

    @property
    def cond_dim(self) -> int:
        if self.kind == "label":
            return self.num_classes
        if self.kind == "quadrants":
            return int(self.mask.sum())
        return 0

    @property
    def target_dim(self) -> int:
        return self.num_features - self.cond_dim if self.kind == "quadrants" else self.num_features

    def labels(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.partial:  # hidden labels (-1) -> zero rows
            known = y >= 0
            return self.labels_of(torch.where(known, y, 0), dtype) * known.unsqueeze(-1).to(dtype)
        return self.labels_of(y, dtype)

    def labels_of(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise PyroLVMError(
                f"label {int(y.max()) if int(y.max()) >= self.num_classes else int(y.min())} is out of range; "
                f"labels must lie in 0..{self.num_classes - 1}"
            )
        return F.one_hot(y, self.num_classes).to(dtype)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.kind == "none":
            return x, None
        if self.kind == "label":
            return x, self.labels(y, x.dtype)
        if x.shape[-1] != self.mask.shape[0]:
            raise PyroLVMError(f"quadrant mask covers {self.mask.shape[0]} pixels but images have {x.shape[-1]}")
        mask = self.mask.to(x.device)
        return x[:, ~mask], x[:, mask]

    def assemble(self, target: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Quadrants: put observed (c) and hidden (target) pixels back into full images (B, P)."""
        full = torch.empty(*target.shape[:-1], self.num_features, dtype=target.dtype, device=target.device)
        mask = self.mask.to(target.device)
        full[..., mask] = c.expand(*target.shape[:-1], c.shape[-1])
        full[..., ~mask] = target
        return full
