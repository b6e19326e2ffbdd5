"""The guide of the semi-supervised model M2: a classifier q(y | x) and an encoder q(z | x, y) (Kingma et al. 2014).

    q(y, z | x) = Cat(y | softmax(g(x))) · N(z | mu(x, y), diag sigma(x, y)²)

Called with ``c`` (one-hot labels) it is the label CVAE's encoder; with ``c = None`` it samples (or, under
``TraceEnum_ELBO`` with ``enumerate = "parallel"``, enumerates) ``y`` from the classifier first.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field
from pyro.nn import PyroModule

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides.amortized import AmortizedOptions, encoder_cost
from pyro_lvm.guides.local import needs_x, sample_z
from pyro_lvm.models.m2 import one_hot
from pyro_lvm.models.vae import data_plate
from pyro_lvm.nn import GaussianHead
from pyro_lvm.registry import GUIDES, NETWORKS, Widths


class M2GuideOptions(AmortizedOptions):
    classifier_hidden: Widths = Field(default_factory=lambda: [256])  # q(y | x)'s widths (net: guide.net)


def cat_broadcast(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[x, c] along the last dim, both broadcast to their common leading shape: x (B, P), c (K, 1, K) -> (K, B, P+K)."""
    lead = torch.broadcast_shapes(x.shape[:-1], c.shape[:-1])
    return torch.cat([x.expand(*lead, x.shape[-1]), c.expand(*lead, c.shape[-1])], dim=-1)


@GUIDES.register("m2", M2GuideOptions, infers_labels=True, memory=encoder_cost)
class M2Guide(PyroModule):
    def __init__(
        self,
        num_features: int,
        latent_dim: int,
        cond_dim: int = 0,
        hidden: list[int] | None = None,
        classifier_hidden: list[int] | None = None,
        net: str = "mlp",
        conv_channels: list[int] | None = None,
        image_shape=None,
        **_: object,
    ) -> None:
        super().__init__()
        if cond_dim < 2:
            raise PyroLVMError("guide 'm2' infers a class label: use it with model.name = 'm2'")
        self.num_classes = cond_dim
        image = dict(role="encoder", image_shape=image_shape, conv_channels=conv_channels)
        self.encoder = GaussianHead(num_features + cond_dim, list(hidden or [128, 128]), latent_dim, net=net, **image)
        self.classifier = NETWORKS.build(
            net, n_in=num_features, n_out=cond_dim, hidden=list(classifier_hidden or [256]), **image
        )

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(y | x), (B, K)."""
        return self.classifier(x)

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(cat_broadcast(x, c))  # (..., B, D) each

    def forward(self, x, c=None, *, idx=None, num_data=None, beta=1.0, batch_size=None, observe=True):
        needs_x(x)  # batch_size and observe are the model's: a guide reads x regardless
        with data_plate(x, idx, num_data):
            if c is None:
                y = pyro.sample("y", dist.Categorical(logits=self.classify(x)))  # (B,), or (K, 1) enumerated
                c = one_hot(y, self.num_classes, x.dtype)
            loc, scale = self.encode(x, c)
            return sample_z(loc, scale, beta)
