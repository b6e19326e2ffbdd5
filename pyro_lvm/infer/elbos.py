"""ELBO registry. Every entry is a Pyro ELBO; the training step calls ``differentiable_loss`` where Pyro offers
it (one torch graph, our own optimiser) and ``loss_and_grads`` otherwise (RenyiELBO).

- ``trace``: Trace_ELBO, -E_q[log p(x,z) - log q(z|x)], Monte Carlo over ``num_particles``.
- ``mean_field``: TraceMeanField_ELBO, the KL(q||p) term analytic where torch registers it (Gaussian prior),
  Monte Carlo otherwise (e.g. the mixture prior): never silently wrong.
- ``renyi``: the Rényi bound with ``alpha`` (0: IWAE, log mean_k w_k), reduced per datapoint *before* the N/B
  subsample scale (``pyro_lvm.infer.renyi``; Pyro's RenyiELBO scales inside the logsumexp and is not the bound then).

``elbo.jit`` (``build_elbo``) runs ``trace`` and ``mean_field`` through Pyro's JIT (``torch.jit.trace``) with
TorchScript's graph optimiser off: the compiled function replays the eager program's tensor operations without
Pyro's per-step Python, and autograd records the same operations, so gradients and parameters are the plain
ELBO's bit for bit (tests/test_elbos.py). With the optimiser on, TorchScript's own autodiff ran a different,
slower backward (softplus as where/exp/div) and drifted from the plain path (3e-8 after 30 steps).
- ``auto`` (default): compiled when it can be; the plain ELBO, silently, where it cannot: dynamic programs (the
  semi-amortized guide's inner gradient steps), Pyro validation on (its checks would be skipped inside compiled
  calls), more than ``MAX_SIGNATURES`` batch shapes. ``JitWithFallback.path`` says which ran (metrics.json).
- ``on``: the same, with a warning at each fallback and compiled even with validation on.
- ``off``: the plain ELBO.
On the 2-core CPU it takes a batch-128 step from 1.30-1.35x to 1.07-1.08x the hand-written PyTorch step
(benchmarks/vae_step.py, figures in benchmarks/README.md).
"""

from __future__ import annotations

import warnings
from typing import Literal

import pyro
import torch
from pydantic import Field, model_validator
from pyro import infer
from pyro.infer.util import is_validation_enabled

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.infer.renyi import RenyiObjective
from pyro_lvm.registry import ELBOS, Options


class ElboOptions(Options):
    """Options every ELBO has (the base schema of the ``elbo`` registry)."""

    num_particles: int = Field(1, gt=0, le=1_000_000)  # vectorised: memory ~ particles x batch x widths
    vectorize_particles: bool = True
    # trace / mean_field through Pyro's JIT: the plain ELBO's gradients bit for bit, 1.3x -> 1.07x the
    # hand-written step at batch 128 on 2 CPU cores. auto: compiled where possible, else plain; on: also warn
    # when falling back; off: always plain.
    jit: Literal["auto", "on", "off"] = "auto"

    @model_validator(mode="after")
    def _compiled_form(self) -> ElboOptions:
        if self.jit == "on" and getattr(self, "name", None) not in JIT_FORMS:
            raise PyroLVMError(
                f"elbo.jit = 'on' needs an ELBO with a compiled form ({', '.join(JIT_FORMS)}); "
                f"{getattr(self, 'name', '?')!r} has none: use elbo.jit = 'auto' or 'off'"
            )
        return self


class RenyiOptions(ElboOptions):
    alpha: float = 0.0  # alpha = 0 is the IWAE bound


ELBOS.base = ElboOptions


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


@ELBOS.register("renyi", RenyiOptions)
def renyi(num_particles: int = 1, vectorize_particles: bool = True, alpha: float = 0.0, **_: object) -> RenyiObjective:
    return RenyiObjective(num_particles, vectorize_particles, alpha)


class _JitTrace(infer.JitTrace_ELBO):
    """Pyro 1.9.2's JitTrace_ELBO.differentiable_loss returns ``loss + (surrogate - surrogate.detach())`` where
    ``loss`` itself carries the reparameterised gradient, so gradients come out doubled (caught by our equality
    test against Trace_ELBO). Detaching ``loss`` gives the surrogate's gradient alone, as Trace_ELBO does."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.finish(self.loss_and_surrogate_loss(model, guide, *args, **kwargs))

    @staticmethod
    def finish(out):
        loss, surrogate_loss = out
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())

    def compiled_function(self):
        """Pyro's CompiledFunction (pyro.ops.jit) behind this ELBO, once a call has created it."""
        return self._loss_and_surrogate_loss


class _JitTraceMeanField(infer.JitTraceMeanField_ELBO):
    """Pyro 1.9.2's JitTraceMeanField_ELBO checks ``_loss_and_surrogate_loss`` but stores ``_differentiable_loss``,
    so it builds and traces a new function on every call (3-5x slower, memory growing ~2 MB per step). Setting
    the checked attribute after the first call makes it reuse the compiled function."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        self._loss_and_surrogate_loss = self._differentiable_loss
        return loss

    @staticmethod
    def finish(out):
        return out

    def compiled_function(self):
        return self._differentiable_loss


class JitWithFallback:
    """A Pyro JIT ELBO run safely inside pyro_lvm, with the plain ELBO as its fallback.

    - Our modules keep their parameters local (``module_local_params``); Pyro's JIT looks parameters up by name in
      the param store. So each call runs with module-local parameters off, inside this object's own param-store
      scope: the names it registers never meet another experiment's.
    - The JIT needs tensors as positional arguments and fixed shapes: ``x, c, idx, beta`` are passed positionally
      (beta as a float64 tensor, so KL annealing does not retrace and ``beta * N / B`` is computed in double
      precision as the plain path computes it with Python floats), and each distinct call signature (batch shape,
      the irregular last batch, model, guide, num_data) gets its own compiled function, up to ``MAX_SIGNATURES``.
    - Tracing runs the program several times and would consume extra random numbers; the random state is restored
      after it and the compiled function called afresh, so a compiled run draws exactly what a plain run draws
      (resume stays exact, and a failed trace leaves the stream untouched before falling back).
    - Compiled calls run with TorchScript's optimiser off (``torch.jit.optimized_execution(False)``): the graph's
      operations are the eager ones and autograd differentiates them as in eager mode.
    """

    MAX_SIGNATURES = 4

    def __init__(self, jit_elbo: infer.ELBO, plain_elbo: infer.ELBO, name: str, strict: bool = False) -> None:
        self.jit, self.plain, self.name, self.strict = jit_elbo, plain_elbo, name, strict
        self.num_particles = plain_elbo.num_particles
        self.failure: str | None = None  # why tracing failed, once it has
        self.plain_reason: str | None = None  # why the latest plain call was plain
        self._fns: dict = {}  # signature -> (model_fn, guide_fn)
        self._bound: dict = {}  # signature -> (TorchScript function, parameter tensors), see _bind
        self._store = None
        self._warned: set[str] = set()

    @property
    def path(self) -> str:
        """What ran the latest call: the compiled function or the plain ELBO (and why)."""
        if self.plain_reason is None:
            return f"{self.name}, compiled (torch.jit.trace, {len(self._fns)} batch shape(s))"
        return f"{self.name}, plain ({self.plain_reason})"

    def _plain(self, reason: str) -> None:
        self.plain_reason = reason
        if self.strict and reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"elbo {self.name!r} with elbo.jit = 'on': {reason}; using the plain ELBO", stacklevel=3)

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
            # frozen modules (the quadrant CVAE's NN baseline) are constants of the compiled function, as intended
            warnings.filterwarnings("ignore", message=".*not registered in the param store because requires_grad")
            with pyro.get_param_store().scope(state=self._store) as state, torch.jit.optimized_execution(False):
                loss = self.jit.differentiable_loss(model_fn, guide_fn, *args, signature=signature)
            self._store = state
        return loss

    def _bind(self, signature) -> None:
        """Keep the TorchScript function Pyro compiled for ``signature`` and the parameter tensors it takes, so that
        later calls skip Pyro's per-call plumbing (a ``pyro.param`` per parameter, handlers around the call):
        ~0.2 ms a step, same function, same tensors, same result. The tensors are the modules' own parameters,
        which optimisers and ``load_state_dict`` update in place. Uses Pyro internals (``pyro/ops/jit.py``); if
        they are not as expected, calls keep going through Pyro."""
        try:
            compiled = self.jit.compiled_function()
            (fn,) = [fn for key, fn in compiled.compiled.items() if ("signature", signature) in key[1]]
            store = pyro.get_param_store()
            with pyro.settings.context(module_local_params=False), store.scope(state=self._store):
                params = tuple(pyro.param(name).unconstrained() for name in compiled._param_names)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            return
        self._bound[signature] = fn, params

    def _bound_call(self, signature, args) -> torch.Tensor:
        fn, params = self._bound[signature]
        with torch.jit.optimized_execution(False):
            return self.jit.finish(fn(*params, *args))

    def _try_compiled(self, model, guide, x, c, idx, num_data, beta) -> torch.Tensor | None:
        """The compiled loss, or None (with ``plain_reason`` set) where the plain ELBO must run."""
        if self.failure is not None:
            self._plain(f"tracing failed: {self.failure[:200]}")
            return None
        if not self.strict and is_validation_enabled():
            self._plain("Pyro validation is on: its checks run in the plain ELBO only")
            return None
        shapes = tuple(None if t is None else tuple(t.shape) for t in (x, c, idx))
        signature = (id(model), id(guide), shapes, num_data, str(x.device), str(x.dtype))
        new = signature not in self._fns
        if new and len(self._fns) >= self.MAX_SIGNATURES:
            self._plain(f"more than {self.MAX_SIGNATURES} distinct call shapes")
            return None
        beta = torch.as_tensor(beta, dtype=torch.float64, device=x.device)
        args = [x, *(t for t in (c, idx) if t is not None), beta]
        rng = (torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.is_cuda else None) if new else None
        try:
            if new:
                self._fns[signature] = self._closures(model, guide, c is not None, idx is not None, num_data)
                self._compiled_call(signature, args)  # traces; the result is discarded
                self._restore(rng)
                loss = self._compiled_call(signature, args)
                self._bind(signature)
            elif signature in self._bound:
                loss = self._bound_call(signature, args)
            else:
                loss = self._compiled_call(signature, args)
        except Exception as err:  # noqa: BLE001 - any tracing failure means: run the plain ELBO
            if rng is None:
                raise  # a compiled function that worked before and fails now: a real error, not a tracing one
            self._restore(rng)
            self._fns.pop(signature, None)
            self._bound.pop(signature, None)
            self.failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            self._plain(f"tracing failed: {self.failure[:200]}")
            return None
        self.plain_reason = None
        return loss

    def differentiable_loss(self, model, guide, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor:
        loss = self._try_compiled(model, guide, x, c, idx, num_data, beta)
        if loss is None:
            loss = self.plain.differentiable_loss(model, guide, x, c, idx=idx, num_data=num_data, beta=beta)
        return loss

    @staticmethod
    def _restore(rng) -> None:
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1])


JIT_FORMS = {"trace": _JitTrace, "mean_field": _JitTraceMeanField}


def build_elbo(options: ElboOptions) -> infer.ELBO | RenyiObjective | JitWithFallback:
    """The ELBO ``options.name`` with its options; with ``jit`` 'auto' or 'on' (and a compiled form), wrapped in
    JitWithFallback."""
    kwargs = options.kwargs()
    jit = kwargs.pop("jit")
    plain = ELBOS.build(options.name, **kwargs)
    if jit == "off" or options.name not in JIT_FORMS:
        return plain
    common = _common(options.num_particles, options.vectorize_particles)
    jit_elbo = JIT_FORMS[options.name](**common, ignore_jit_warnings=True)
    return JitWithFallback(jit_elbo, plain, options.name, strict=jit == "on")


def loss_and_backward(elbo, model, guide, *args, **kwargs) -> torch.Tensor:
    """One loss evaluation with gradients accumulated into the parameters' ``.grad``; returns the loss."""
    if hasattr(elbo, "differentiable_loss"):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.detach()
    return torch.tensor(elbo.loss_and_grads(model, guide, *args, **kwargs))


from pyro_lvm.infer import semi_supervised  # noqa: E402, F401  (registers trace_enum)
