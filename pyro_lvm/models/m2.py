"""The semi-supervised model M2 (Kingma et al. 2014): the CVAE's generative story with the label as a latent
variable where it is not observed.

    y ~ Cat(1/K),   z ~ p(z | y),   x ~ p(x | f(z, y))

The model alone owns the sites ``"y"``, ``"z"`` and ``"x"``. Called with ``c`` (one-hot labels, (B, K)) the site
``y`` is observed and the program is the label CVAE plus the constant log p(y) = −log K; called with ``c = None``
``y`` is latent: the guide's classifier q(y | x) proposes it, or ``TraceEnum_ELBO`` sums it out exactly (the
``m2`` guide's ``y`` is discrete, so parallel enumeration gives it a dim of size K left of the data plate: y then
has shape (K, 1) and every tensor built from it carries that dim).
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field
from pyro import poutine

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.models.vae import VAE, ModelOptions, broadcast_cat, data_plate, decoder_cost
from pyro_lvm.registry import MODELS


class M2Options(ModelOptions):
    condition: Literal["label"] = "label"  # the label: observed where known, latent where not
    # α of Kingma et al.'s auxiliary term α · log q(y | x) on labelled rows (0: the plain ELBO)
    aux_weight: float = Field(0.0, ge=0.0)


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(..., ) labels -> (..., K); an enumerated y of shape (K, 1) gives (K, 1, K). A comparison with arange, not
    ``F.one_hot``, whose range check reads the labels on the host (no graph can hold it: ``pyro_lvm.infer.pure``);
    labels are checked against K when the data are loaded."""
    return (y.unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(dtype)


@MODELS.register("m2", M2Options, recipe="semi_supervised", memory=decoder_cost)
class M2(VAE):
    """p(x, y, z) = p(y) p(z | y) p(x | f(z, y)), p(y) uniform over the K classes."""

    recipe = "semi_supervised"  # how it trains and is evaluated: the label summed out (pyro_lvm.training.recipes)

    def __init__(self, *args: object, num_classes: int = 0, aux_weight: float = 0.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if num_classes < 2:
            raise PyroLVMError("model 'm2' infers a class label: it needs a labelled dataset (2 or more classes)")
        self.num_classes = num_classes
        self.aux_weight = aux_weight

    def forward(
        self,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        *,
        idx: torch.Tensor | None = None,
        num_data: int | None = None,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        label = None if c is None else c.argmax(-1)  # (B,)
        weight = next(self.decoder.parameters())  # dtype and device when x is None (predictive draws)
        with data_plate(x, idx, num_data, c=c, batch_size=batch_size):
            prior_y = dist.Categorical(logits=weight.new_zeros(self.num_classes))
            y = pyro.sample("y", prior_y, obs=label)  # (B,), or (K, 1) when enumerated
            c = one_hot(y, self.num_classes, weight.dtype)  # (B, K) or (K, 1, K)
            with poutine.scale(scale=beta):
                z = pyro.sample("z", self.prior_dist(c))  # (..., B, D)
            out = self.decoder(broadcast_cat(z, c))  # (..., B, P)
            pyro.sample("x", self.likelihood(out), obs=x if observe else None)
        return out
