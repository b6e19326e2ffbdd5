"""The non-amortized guide: free (mu_n, sigma_n) for each of the N training rows, looked up by ``idx``.

Rows live in sparse ``nn.Embedding`` tables stored unconstrained; only the batch's rows are read, transformed
(softplus) and, with the row-wise optimiser of ``pyro_lvm.infer.optim``, updated, so a step costs O(batch), not O(N).
"""

from __future__ import annotations

import torch
from pydantic import Field
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from pyro_lvm.context import host_checks
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides.local import MIN_SCALE, sample_z
from pyro_lvm.models.vae import data_plate
from pyro_lvm.registry import GUIDES, Options
from pyro_lvm.resources import Cost


class PerDatapointOptions(Options):
    init_scale: float = Field(1.0, gt=0.0)  # initial q scale of every row


def inverse_softplus(y: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(y))))


def table_cost(opts, *, latent_dim: int, num_data: int, **_: object) -> Cost:
    """A loc and a scale of z per training row."""
    return Cost(2 * num_data * latent_dim)


@GUIDES.register("per_datapoint", PerDatapointOptions, memory=table_cost)
class PerDatapointGuide(PyroModule):
    """q(z_n) = N(mu_n, diag softplus(rho_n)²) for n = 1..N; mu and rho are (N, D) sparse embedding tables."""

    amortized = False  # no q(z | x) for an unseen x: the rows belong to the training points

    def __init__(self, num_data: int, latent_dim: int, init_scale: float = 1.0, **_: object) -> None:
        super().__init__()
        self.num_data = num_data
        self.loc = nn.Embedding(num_data, latent_dim, sparse=True)
        self.raw_scale = nn.Embedding(num_data, latent_dim, sparse=True)
        with torch.no_grad():
            self.loc.weight.zero_()
            self.raw_scale.weight.fill_(inverse_softplus(init_scale))

    def local_params(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(idx), F.softplus(self.raw_scale(idx)) + MIN_SCALE  # (B, D) each

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0, batch_size=None, observe=True):
        if idx is None:
            raise PyroLVMError("the per_datapoint guide needs dataset indices: call it with idx=batch.idx")
        if num_data is not None and num_data != self.num_data:
            raise PyroLVMError(
                f"the per_datapoint guide holds {self.num_data} rows but num_data={num_data}; "
                "build it for the dataset it is trained on"
            )
        if host_checks() and idx.numel() and int(idx.max()) >= self.num_data:
            raise PyroLVMError(
                f"index {int(idx.max())} is out of range for a per_datapoint guide of {self.num_data} rows; "
                "its dataset does not match the one it was built for"
            )
        with data_plate(x, idx, num_data):
            loc, scale = self.local_params(idx)
            return sample_z(loc, scale, beta)
