"""The SVI step's loss and gradients as one pure torch function, traced once from the Pyro program.

``PureStep(objective, model, guide)`` runs the objective's ``differentiable_loss`` and ``torch.autograd.grad``
under ``torch.fx``'s ``make_fx`` once per call signature (batch shape, ``num_data``, device, dtype) and keeps the
recorded graph of ATen operations:

    f(θ, s, x, c, idx, β) = (L, ∇_θ L),   L = the objective's loss of model and guide at parameters θ,

with s the modules' other tensors (buffers, frozen parameters): a function with no Pyro, no handlers, no
``.item()`` and no Python per operation beyond the graph's own calls. Its random draws are the graph's random
operations (``aten.normal`` ...), replayed on torch's generator in the program's order, so f draws exactly what
the eager step draws: same stream, same values, same gradients (bit for bit on the CPU; tests/test_pure_step.py
compares every built-in model, guide and objective in float64).

- β is an input (a float64 0-dim tensor, as the JIT path passes it): KL warm-up never retraces.
- Pyro's host-side helpers inside the ELBOs (``warn_if_nan``, ``torch_item`` used to detach the surrogate, and
  enumeration's test for a zero probability) are swapped for graph-friendly versions while tracing
  (``graph_friendly``): the loop's non-finite guard reads the loss instead. Our own host checks ask
  ``pyro_lvm.context.host_checks()`` and are skipped while tracing, since the strategy's batches are valid by
  construction.
- A program whose control flow reads tensor values (``bool(t)``, ``t.item()``) cannot be a graph: make_fx refuses,
  and ``PureStep`` records why (``failure``) so the strategy falls back to the eager step with one line.
- ``compile=True`` hands the graph to ``torch.compile`` (inductor, ``fallback_random`` so that the draws stay
  torch's), which fuses the elementwise work; benchmarks/README.md says when that pays on the CPU.
- The graph holds its own backward, so it runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import importlib
import numbers
from collections.abc import Iterator
from unittest import mock

import torch
from torch import nn

from pyro_lvm.context import tracing
from pyro_lvm.seeding import cuda_devices

# Pyro's ELBO modules whose host-side helpers are swapped while tracing
_PYRO_ELBO_MODULES = ("pyro.infer.trace_elbo", "pyro.infer.trace_mean_field_elbo", "pyro.infer.traceenum_elbo")
MAX_SIGNATURES = 4  # distinct call shapes traced before the eager step takes over (each trace costs a step or two)


def _detach(x):
    """Pyro's ``torch_item`` as the surrogate-loss idiom uses it (``loss + (s - torch_item(s))``): the same value,
    the same (zero) gradient, without a host read."""
    return x if isinstance(x, numbers.Number) else x.detach()


def _no_check(*_args, **_kwargs) -> None:
    return None


@contextlib.contextmanager
def graph_friendly() -> Iterator[None]:
    """While tracing: Pyro's per-call host checks off, and ``pyro_lvm.context.host_checks()`` False."""
    with contextlib.ExitStack() as stack:
        for name in _PYRO_ELBO_MODULES:
            module = importlib.import_module(name)
            for attr, swap in (("warn_if_nan", _no_check), ("warn_if_inf", _no_check), ("torch_item", _detach)):
                if hasattr(module, attr):
                    stack.enter_context(mock.patch.object(module, attr, swap))
        # Pyro's enumeration (Dice) skips its masking when every probability is positive, a host read; under
        # torch.jit it takes the masked path, which is always correct. Its module sees a tracer's answer.
        stack.enter_context(mock.patch.object(importlib.import_module("pyro.infer.util"), "torch", _AS_TRACED))
        stack.enter_context(tracing())
        yield


class _TracedC:
    """``torch._C`` with ``_get_tracing_state()`` truthy, for one Pyro module's graph-friendly branches."""

    def __getattr__(self, name: str):
        return (lambda: True) if name == "_get_tracing_state" else getattr(torch._C, name)


class _AsTraced:
    """``torch`` as one Pyro module sees it while tracing: itself, but for ``torch._C._get_tracing_state``."""

    _C = _TracedC()

    def __getattr__(self, name: str):
        return getattr(torch, name)


_AS_TRACED = _AsTraced()


class _Program(nn.Module):
    """Model, guide and objective as one module, so ``torch.func.functional_call`` can substitute the parameters of
    both (shared submodules once) by name."""

    def __init__(self, objective, model: nn.Module, guide: nn.Module) -> None:
        super().__init__()
        self.model, self.guide = model, guide
        self.objective = objective

    def forward(self, x, c, idx, beta, num_data):
        return self.objective.differentiable_loss(self.model, self.guide, x, c, idx=idx, num_data=num_data, beta=beta)


def _where(err: BaseException) -> str:
    """The innermost frame of ours or the user's (not torch's) in a tracing error's traceback."""
    import traceback

    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/torch/" not in f.filename]
    return f" ({frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno})" if frames else ""


class PureStep:
    """Loss and gradients of ``objective`` on ``model`` and ``guide`` through traced pure functions (see the
    module docstring). ``__call__`` accumulates ∇L into the parameters' ``.grad`` like ``loss.backward()`` and
    returns L detached, or None (``failure`` says why) when the program cannot be traced."""

    def __init__(self, objective, model: nn.Module, guide: nn.Module, compile: bool = False) -> None:
        self.program = _Program(objective, model, guide)
        self.compile = compile
        self.failure: str | None = None
        self._fns: dict = {}  # signature -> graph (compiled or not)
        named = [(n, p) for n, p in self.program.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        # the rest of the modules' tensors (buffers such as a flow's masks, frozen parameters) are inputs too, not
        # constants of the graph: replicas of one program differ in them (pyro_lvm/infer/noise.py)
        fixed = [(n, p) for n, p in self.program.named_parameters() if not p.requires_grad]
        fixed += list(self.program.named_buffers())
        self.state_names = [n for n, _ in fixed]
        self.state = [t for _, t in fixed]

    @property
    def path(self) -> str:
        if self.failure is not None:
            return f"eager (the step cannot be traced: {self.failure})"
        kind = "torch.compile (inductor)" if self.compile else "traced graph"
        return f"pure step, {kind}, {len(self._fns)} batch shape(s)"

    def _function(self, num_data):
        names, state_names, program = self.names, self.state_names, self.program

        def f(params, state, x, c, idx, beta):
            tensors = dict(zip(names, params, strict=True)) | dict(zip(state_names, state, strict=True))
            loss = torch.func.functional_call(program, tensors, (x, c, idx, beta, num_data))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return loss.detach(), grads

        return f

    def trace(self, x, c, idx, num_data, beta: torch.Tensor):
        """The graph of f for these inputs' signature; tracing runs the program once, so torch's random state is
        put back afterwards (the caller's next draws are the eager step's)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        with torch.random.fork_rng(devices=cuda_devices()), graph_friendly():
            graph = make_fx(self._function(num_data), tracing_mode="real")(self.params, self.state, x, c, idx, beta)
        if self.compile:
            graph = torch.compile(graph, backend="inductor", fullgraph=True, dynamic=False)
        return graph

    def __call__(self, x, c=None, *, idx=None, num_data=None, beta=1.0) -> torch.Tensor | None:
        if self.failure is not None:
            return None
        shapes = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in (x, c, idx))
        structure = getattr(self.program.objective, "structure", None)  # e.g. M2: its count of labelled rows
        signature = (shapes, num_data, str(x.device), None if structure is None else structure(x, c))
        beta = torch.as_tensor(beta, dtype=torch.float64, device=x.device)
        fn = self._fns.get(signature)
        if fn is None:
            if len(self._fns) >= MAX_SIGNATURES:
                self.failure = f"more than {MAX_SIGNATURES} distinct batch shapes"
                return None
            try:
                fn = self._fns[signature] = self.trace(x, c, idx, num_data, beta)
            except Exception as err:  # noqa: BLE001 - any tracing failure means: the eager step runs
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                self.failure = f"{type(err).__name__}: {first[:160]}{_where(err)}"
                return None
        # no_grad: the graph holds its own backward; autograd recording its operations again would only cost time
        # (and make inductor compile a differentiable function of the parameters)
        with torch.no_grad(), _inductor_draws() if self.compile else contextlib.nullcontext():
            loss, grads = fn(self.params, self.state, x, c, idx, beta)
        for p, g in zip(self.params, grads, strict=True):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        return loss


@contextlib.contextmanager
def _inductor_draws() -> Iterator[None]:
    """Inductor compiles on the first call; ``fallback_random`` makes its random operations torch's own (the
    eager step's draws), not inductor's Philox stream. Set for the call only: torch's config is global."""
    from torch._inductor import config as inductor_config

    with inductor_config.patch(fallback_random=True):
        yield
