"""Step strategies: how a training step is taken. Built in: ``single`` (one process, the batch in one piece),
``chunked`` (the batch in ``train.micro_batches`` chunks, and the ranks of a torchrun job under DDP), ``traced`` and
``compiled`` (the step as a pure torch function, ``train.step``), ``graph`` (that function and the update as one
CUDA graph). A new step kind is one file with a ``Strategy``
subclass, registered with ``register_strategy``. ``select`` picks the built-in one a run's settings ask for; ``fit``
takes any."""

from __future__ import annotations

from typing import Any

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.strategies.base import Strategy
from pyro_lvm.training.strategies.chunked import ChunkedStrategy
from pyro_lvm.training.strategies.ddp import Ranks
from pyro_lvm.training.strategies.graph import GraphStrategy
from pyro_lvm.training.strategies.single import SingleStrategy
from pyro_lvm.training.strategies.traced import CompiledStrategy, TracedStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (SingleStrategy, ChunkedStrategy, TracedStrategy, CompiledStrategy, GraphStrategy)
}
AUTO_STEP = "eager"  # train.step = "auto" (benchmarks/README.md, "Pure step")


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
    """The built-in strategy for ``exp``'s settings: ``train.step`` (auto: AUTO_STEP); an eager step is chunked
    for micro-batches or several ranks, else single."""
    kind = exp.cfg.train.step if exp.cfg.train.step != "auto" else AUTO_STEP
    pieces = exp.cfg.train.micro_batches > 1 or Ranks().size > 1
    if kind == "eager":
        return "chunked" if pieces else "single"
    if pieces:
        raise PyroLVMError(
            f"train.step = {kind!r} takes each batch in one piece in one process: set train.micro_batches = 1 "
            "and drop --nproc, or use train.step = 'eager'"
        )
    return kind


def build(exp: Any, name: str | None = None) -> Strategy:
    """The strategy ``name`` (default: ``select(exp)``) for ``exp``, once its recipe has accepted it."""
    name = name or select(exp)
    if name not in STRATEGIES:
        raise PyroLVMError(f"unknown step strategy {name!r}; registered: {', '.join(sorted(STRATEGIES))}")
    exp.recipe.check(name, exp, Ranks().size)
    return STRATEGIES[name](exp, exp.recipe)


__all__ = ["AUTO_STEP", "STRATEGIES", "Ranks", "Strategy", "build", "ranks", "register_strategy", "select"]
