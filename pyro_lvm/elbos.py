"""ELBO registry. Every entry is a Pyro ELBO; the training step calls ``differentiable_loss`` where Pyro offers
it (one torch graph, our own optimiser) and ``loss_and_grads`` otherwise (RenyiELBO).

- ``trace``: Trace_ELBO, -E_q[log p(x,z) - log q(z|x)], Monte Carlo over ``num_particles``.
- ``mean_field``: TraceMeanField_ELBO, the KL(q||p) term analytic where torch registers it (Gaussian prior),
  Monte Carlo otherwise (e.g. the mixture prior): never silently wrong.
- ``renyi``: RenyiELBO with ``alpha``; alpha = 0 and K particles is the IWAE bound log mean_k w_k.

- ``jit_trace`` / ``jit_mean_field``: the same objectives compiled with Pyro's JIT (``torch.jit.trace``); if
  tracing fails (dynamic structure: the semi-amortized guide's inner gradient steps), calls run the plain ELBO,
  with one warning. Each batch shape (e.g. the irregular last batch) gets its own compiled function.
  It removes Pyro's per-step Python: on this 2-core CPU 7.9 -> 6.9 ms per step at batch 128 and 34.9 -> 34.4 ms
  at batch 1024 (784-400-50, validation off; benchmarks/vae_step.py, figures in benchmarks/README.md).
"""

from __future__ import annotations

import warnings

import pyro
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


class _JitTrace(infer.JitTrace_ELBO):
    """Pyro 1.9.2's JitTrace_ELBO.differentiable_loss returns ``loss + (surrogate - surrogate.detach())`` where
    ``loss`` itself carries the reparameterised gradient, so gradients come out doubled (caught by our equality
    test against Trace_ELBO). Detaching ``loss`` gives the surrogate's gradient alone, as Trace_ELBO does."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss, surrogate_loss = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())


class _JitTraceMeanField(infer.JitTraceMeanField_ELBO):
    """Pyro 1.9.2's JitTraceMeanField_ELBO checks ``_loss_and_surrogate_loss`` but stores ``_differentiable_loss``,
    so it builds and traces a new function on every call (3-5x slower, memory growing ~2 MB per step). Setting
    the checked attribute after the first call makes it reuse the compiled function."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        self._loss_and_surrogate_loss = self._differentiable_loss
        return loss


class JitWithFallback:
    """A Pyro JIT ELBO run safely inside pyro_lvm.

    - Our modules keep their parameters local (``module_local_params``); Pyro's JIT looks parameters up by name in
      the param store. So each call runs with module-local parameters off, inside this object's own param-store
      scope: the names it registers never meet another experiment's.
    - The JIT needs tensors as positional arguments and fixed shapes: ``x, c, idx, beta`` are passed positionally
      (beta as a tensor, so KL annealing does not retrace), and each distinct call signature (batch shape, the
      irregular last batch, model, guide, num_data) gets its own compiled function, up to ``MAX_SIGNATURES``;
      beyond that, calls run the plain ELBO.
    - Tracing runs the program several times and would consume extra random numbers; the random state is restored
      after it and the compiled function called afresh, so a JIT run draws exactly what a plain run draws (resume
      stays exact, and a failed trace leaves the stream untouched before falling back).
    """

    MAX_SIGNATURES = 4

    def __init__(self, jit_elbo: infer.ELBO, plain_elbo: infer.ELBO, name: str) -> None:
        self.jit, self.plain, self.name = jit_elbo, plain_elbo, name
        self.num_particles = plain_elbo.num_particles
        self.failure: str | None = None  # why tracing failed, once it has
        self._fns: dict = {}  # signature -> (model_fn, guide_fn)
        self._store = None
        self._warned: set[str] = set()

    def _warn(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"elbo {self.name!r}: {reason}; using the plain ELBO for such calls", stacklevel=3)

    @staticmethod
    def _closures(model, guide, has_c: bool, has_idx: bool, num_data):
        def unpack(rest):
            rest = list(rest)
            c = rest.pop(0) if has_c else None
            idx = rest.pop(0) if has_idx else None
            return c, idx, rest.pop(0)

        def model_fn(x, *rest, signature=None):
            c, idx, beta = unpack(rest)
            return model(x, c, idx=idx, num_data=num_data, beta=beta)

        def guide_fn(x, *rest, signature=None):
            c, idx, beta = unpack(rest)
            return guide(x, c, idx=idx, num_data=num_data, beta=beta)

        return model_fn, guide_fn

    def _compiled_call(self, signature, args) -> torch.Tensor:
        model_fn, guide_fn = self._fns[signature]
        # ``signature`` as a keyword: Pyro's JIT compiles once per distinct keyword values
        with pyro.settings.context(module_local_params=False), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation notice
            with pyro.get_param_store().scope(state=self._store) as state:
                loss = self.jit.differentiable_loss(model_fn, guide_fn, *args, signature=signature)
            self._store = state
        return loss

    def differentiable_loss(self, model, guide, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor:
        shapes = tuple(None if t is None else tuple(t.shape) for t in (x, c, idx))
        signature = (id(model), id(guide), shapes, num_data, str(x.device), str(x.dtype))
        new = signature not in self._fns
        if self.failure is None and new and len(self._fns) >= self.MAX_SIGNATURES:
            self._warn(f"more than {self.MAX_SIGNATURES} distinct call shapes")
        elif self.failure is None:
            args = [x, *(t for t in (c, idx) if t is not None), torch.as_tensor(beta, dtype=x.dtype, device=x.device)]
            rng = torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.is_cuda else None
            try:
                if new:
                    self._fns[signature] = self._closures(model, guide, c is not None, idx is not None, num_data)
                    self._compiled_call(signature, args)  # traces; the result is discarded
                    self._restore(rng)
                return self._compiled_call(signature, args)
            except Exception as err:  # noqa: BLE001 - any tracing failure means: run the plain ELBO
                self._restore(rng)
                self._fns.pop(signature, None)
                self.failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                self._warn(f"tracing failed ({self.failure[:200]})")
        return self.plain.differentiable_loss(model, guide, x, c, idx=idx, num_data=num_data, beta=beta)

    @staticmethod
    def _restore(rng) -> None:
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1])


@ELBOS.register("jit_trace")
def jit_trace(num_particles: int = 1, vectorize_particles: bool = True, **_: object) -> JitWithFallback:
    common = _common(num_particles, vectorize_particles)
    return JitWithFallback(_JitTrace(**common, ignore_jit_warnings=True), infer.Trace_ELBO(**common), "jit_trace")


@ELBOS.register("jit_mean_field")
def jit_mean_field(num_particles: int = 1, vectorize_particles: bool = True, **_: object) -> JitWithFallback:
    common = _common(num_particles, vectorize_particles)
    return JitWithFallback(
        _JitTraceMeanField(**common, ignore_jit_warnings=True), infer.TraceMeanField_ELBO(**common), "jit_mean_field"
    )


def loss_and_backward(elbo, model, guide, *args, **kwargs) -> torch.Tensor:
    """One loss evaluation with gradients accumulated into the parameters' ``.grad``; returns the loss."""
    if hasattr(elbo, "differentiable_loss"):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.detach()
    return torch.tensor(elbo.loss_and_grads(model, guide, *args, **kwargs))
