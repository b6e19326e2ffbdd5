"""ELBO registry. Every entry is a Pyro ELBO; the training step calls ``differentiable_loss`` where Pyro offers
it (one torch graph, our own optimiser) and ``loss_and_grads`` otherwise (RenyiELBO).

- ``trace``: Trace_ELBO, -E_q[log p(x,z) - log q(z|x)], Monte Carlo over ``num_particles``.
- ``mean_field``: TraceMeanField_ELBO, the KL(q||p) term analytic where torch registers it (Gaussian prior),
  Monte Carlo otherwise (e.g. the mixture prior): never silently wrong.
- ``renyi``: RenyiELBO with ``alpha``; alpha = 0 and K particles is the IWAE bound log mean_k w_k.

Not offered: Pyro 1.9's JIT ELBOs look parameters up in the global param store, which our PyroModules do not use
(``module_local_params=True`` keeps experiments independent); they fail with a KeyError on the first step.
"""

from __future__ import annotations

import torch
from pyro import infer

from pyro_lvm.registry import Registry

ELBOS: Registry[infer.ELBO] = Registry("elbo")


def _common(num_particles: int, vectorize_particles: bool) -> dict:
    # Vectorised particles need a free plate dim left of "data" (dim -1): max_plate_nesting = 1.
    return dict(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles and num_particles > 1,
        max_plate_nesting=1,
    )


@ELBOS.register("trace")
def trace(num_particles: int = 1, vectorize_particles: bool = True, **_: object) -> infer.ELBO:
    return infer.Trace_ELBO(**_common(num_particles, vectorize_particles))


@ELBOS.register("mean_field")
def mean_field(num_particles: int = 1, vectorize_particles: bool = True, **_: object) -> infer.ELBO:
    return infer.TraceMeanField_ELBO(**_common(num_particles, vectorize_particles))


@ELBOS.register("renyi")
def renyi(num_particles: int = 1, vectorize_particles: bool = True, alpha: float = 0.0, **_: object) -> infer.ELBO:
    return infer.RenyiELBO(alpha=alpha, **_common(num_particles, vectorize_particles))


def loss_and_backward(elbo, model, guide, *args, **kwargs) -> torch.Tensor:
    """One loss evaluation with gradients accumulated into the parameters' ``.grad``; returns the loss."""
    if hasattr(elbo, "differentiable_loss"):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.detach()
    return torch.tensor(elbo.loss_and_grads(model, guide, *args, **kwargs))
