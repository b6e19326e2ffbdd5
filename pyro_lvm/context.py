"""The Pyro settings pyro_lvm's own calls run under, set for their duration only (importing changes nothing).

Our ``PyroModule``s keep their parameters to themselves (Pyro's ``module_local_params``): two experiments in one
process, or a KL fit beside a VAE, share nothing through Pyro's global parameter store. Pyro's setting is global, so
the library enters it around its own work (``Experiment.from_config``, ``train``, evaluation, the studies and the
CLI) with ``pyro.settings.context`` and leaves the user's Pyro code as it found it. A user who drives our modules
by hand inside our calls' conventions wraps that code in ``with pyro_lvm.scope():``; built and used outside it,
they are ordinary Pyro modules that work with ``SVI`` and ``pyro.optim`` (``pyro_lvm.row_adam``). Inside it Pyro's
``SVI`` cannot run: it collects parameters through ``.unconstrained()``, which only param-store values have, and
module-local parameters stay plain ``nn.Parameter``s; use an ELBO module (``Trace_ELBO()(model, guide)``) and a
torch optimiser there (docs/api.md, "Plain Pyro").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import pyro
import torch
from pyro.nn import PyroModule

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def scope(validation: bool | None = None) -> Iterator[None]:
    """Module-local parameters on, and Pyro's distribution validation set to ``validation`` (unchanged if None),
    until the block ends."""
    with pyro.settings.context(module_local_params=True):
        if validation is None:
            yield
        else:
            with pyro.validation_enabled(validation):
                yield


def adopt(module: torch.nn.Module) -> torch.nn.Module:
    """Give every ``PyroModule`` in ``module`` (built outside ``scope()``) the local parameter store that Pyro
    creates only for modules built with module-local parameters on, so our calls can run it; returns ``module``.
    Outside our calls it stays an ordinary Pyro module."""
    for sub in module.modules():
        context = getattr(sub, "_pyro_context", None)
        if isinstance(sub, PyroModule) and context is not None and not hasattr(context, "param_state"):
            context.param_state = {"params": {}, "constraints": {}}
    return module


def scoped(fn: F) -> F:
    """Decorator: run ``fn`` inside ``scope()``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with scope():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


_TRACING: ContextVar[bool] = ContextVar("pyro_lvm_tracing", default=False)


def host_checks() -> bool:
    """False while a training step is traced into a pure function (``pyro_lvm.infer.pure``): a check that reads a
    tensor's value on the host (an index range, a target's values) cannot be part of a graph, and the traced step's
    inputs are valid by construction. Our components run such checks only when this is True."""
    return not _TRACING.get()


@contextmanager
def tracing() -> Iterator[None]:
    """``host_checks()`` is False until the block ends (this context only: a ``ContextVar``)."""
    token = _TRACING.set(True)
    try:
        yield
    finally:
        _TRACING.reset(token)
