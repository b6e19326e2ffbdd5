"""Guides q(z | x, c), all with the model's signature ``forward(x, c=None, *, idx=None, num_data=None, beta=1.0)``.

- ``amortized``: an encoder predicts q(z|x,c) = N(mu(x,c), diag sigma(x,c)²) (``amortized.py``).
- ``per_datapoint``: free (mu_n, sigma_n) for each of the N training rows, looked up by ``idx`` (``per_datapoint.py``).
- ``semi_amortized``: the encoder's (mu, sigma) refined by K gradient steps on the per-datapoint ELBO (Kim et al.
  2018, SA-VAE) (``amortized.py``, steps in ``local.py``).
- ``amortized_flow``: the encoder's Gaussian warped by K conditional autoregressive transforms (``flow.py``).
- ``m2``: the semi-supervised model's classifier q(y|x) and encoder q(z|x,y) (``classifier.py``).
Guides own their local parameters; they never build the model (``attach`` hands them the one to refine against).
"""

from __future__ import annotations

from pyro.nn import PyroModule

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides.amortized import AmortizedGuide, SemiAmortizedGuide
from pyro_lvm.guides.classifier import M2Guide
from pyro_lvm.guides.flow import AmortizedFlowGuide, build_flows, flow_distribution
from pyro_lvm.guides.local import local_elbo, log_joint_per_datapoint, refine
from pyro_lvm.guides.per_datapoint import PerDatapointGuide
from pyro_lvm.registry import GUIDES, Options

__all__ = [
    "AmortizedFlowGuide",
    "AmortizedGuide",
    "M2Guide",
    "PerDatapointGuide",
    "SemiAmortizedGuide",
    "build_flows",
    "build_guide",
    "flow_distribution",
    "local_elbo",
    "log_joint_per_datapoint",
    "refine",
]


def build_guide(
    options: Options,
    *,
    num_features: int,
    latent_dim: int,
    cond_dim: int,
    num_data: int,
    model: PyroModule,
    image_shape=None,
    observed_mask=None,
) -> PyroModule:
    """The guide ``options.name`` built with its own options and the experiment's sizes (``image_shape``: of the
    target, for image networks), attached to ``model``."""
    guide = GUIDES.build(
        options.name,
        **options.kwargs(),
        num_features=num_features,
        latent_dim=latent_dim,
        cond_dim=cond_dim,
        num_data=num_data,
        image_shape=image_shape,
        observed_mask=observed_mask,
    )
    if hasattr(guide, "attach"):
        guide.attach(model)
    if hasattr(model.prior, "attach_encoder"):
        if not hasattr(guide, "encode"):
            # the flow guide has an encoder, but its q(z | u) is a flow: the VampPrior's mixture needs Gaussians
            has = "an encoder whose q is a flow, not a Gaussian" if hasattr(guide, "encode_base") else "no encoder"
            raise PyroLVMError(
                f"prior 'vamp' is a mixture of the Gaussians q(z | u) an encoder gives its pseudo-inputs u, and guide "
                f"{options.name!r} has {has}; use guide.name = 'amortized' or 'semi_amortized'"
            )
        model.prior.attach_encoder(guide.encode)
    return guide
