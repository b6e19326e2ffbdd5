"""Step strategies: how a training step is taken. ``single`` (one process, the batch in one piece) and ``chunked``
(the batch in ``train.micro_batches`` chunks, and the ranks of a torchrun job under DDP) are built in; a new step kind
is one file with a ``Strategy`` subclass, registered with ``register_strategy``. ``select`` picks the built-in one a
run's settings ask for; ``fit`` takes any."""

from __future__ import annotations

from typing import Any

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.strategies.base import Strategy
from pyro_lvm.training.strategies.chunked import ChunkedStrategy
from pyro_lvm.training.strategies.ddp import Ranks
from pyro_lvm.training.strategies.single import SingleStrategy

STRATEGIES: dict[str, type[Strategy]] = {"single": SingleStrategy, "chunked": ChunkedStrategy}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a ``Strategy`` subclass available under its ``name``."""
    old = STRATEGIES.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise PyroLVMError(f"strategy {cls.name!r} is registered twice; choose another name")
    STRATEGIES[cls.name] = cls
    return cls


def ranks() -> Ranks:
    """This process's place among the ranks of a job (one rank outside torchrun)."""
    return Ranks()


def select(exp: Any) -> str:
    """The built-in strategy for ``exp``'s settings: chunked for micro-batches or several ranks, else single."""
    return "chunked" if exp.cfg.train.micro_batches > 1 or Ranks().size > 1 else "single"


def build(exp: Any, name: str | None = None) -> Strategy:
    """The strategy ``name`` (default: ``select(exp)``) for ``exp``, once its recipe has accepted it."""
    name = name or select(exp)
    if name not in STRATEGIES:
        raise PyroLVMError(f"unknown step strategy {name!r}; registered: {', '.join(sorted(STRATEGIES))}")
    exp.recipe.check(name, exp, Ranks().size)
    return STRATEGIES[name](exp, exp.recipe)


__all__ = ["STRATEGIES", "Ranks", "Strategy", "build", "ranks", "register_strategy", "select"]
