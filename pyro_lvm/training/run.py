"""Training an experiment, with or without a run folder: the rules of the folder (one writer, a new run only in an
empty folder or with ``overwrite``), the run state (fresh, or restored for a resume), the strategy the settings ask
for, and the callbacks of the settings and of the model kind's recipe, handed to ``loop.fit``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.data.batches import note_batch_clamp
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.files import check_new_run_folder
from pyro_lvm.runs.lock import clear, run_lock
from pyro_lvm.training import strategies
from pyro_lvm.training.callbacks import tensorboard
from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.callbacks.checkpoint import Checkpoint
from pyro_lvm.training.callbacks.guard import NonFiniteGuard
from pyro_lvm.training.callbacks.progress import Progress, TimeBudget, Validation
from pyro_lvm.training.callbacks.signals import StopOnSignal
from pyro_lvm.training.loop import fit
from pyro_lvm.training.state import RunState

Validate = bool | Callable[[Any], float] | None


def train(
    exp: Any,
    run_dir: str | Path | None = None,
    resume: bool = False,
    validate: Validate = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> list[dict]:
    """Train ``exp`` for ``train.steps`` steps in total (or until ``train.max_seconds``), checkpointing into
    ``run_dir`` (nothing written without one); returns the history. ``overwrite``: empty ``run_dir`` first, under
    its lock. ``validate``: True for the recipe's validation curve (``val_elbo``; amortized guides), or an
    estimator ``f(exp) -> float``. ``callbacks`` run after the built-in ones. Runs inside ``pyro_lvm.scope`` with
    Pyro's validation set to ``train.pyro_validation``."""
    if resume and run_dir is None:
        raise PyroLVMError("resume needs the run folder to resume from: pass run_dir")
    ranks = strategies.ranks()
    if ranks.size > 1 and exp.cfg.train.micro_batches == 1:  # the run's record: each step in P chunks
        exp.cfg = config.with_overrides(exp.cfg, [f"train.micro_batches={ranks.size}"])
    if exp.cfg.train.tensorboard:
        tensorboard.require(run_dir)  # before the run folder is made
    if exp.cfg.train.mlflow and ranks.lead:
        from pyro_lvm.training.callbacks import mlflow

        mlflow.require(exp.cfg.train)  # the package and the store, before the run folder is made
    with scope(validation=exp.cfg.train.pyro_validation):
        if run_dir is None:
            return _train(exp, None, resume, validate, callbacks)
        run_dir = Path(run_dir)
        if not ranks.lead:  # rank 0 holds the folder and writes; the others read a resumed checkpoint only
            return _train(exp, run_dir, resume, validate, callbacks)
        with run_lock(run_dir):  # one writer per folder (runs/lock.py); the checks below hold under it
            if not resume and check_new_run_folder(run_dir, overwrite):
                clear(run_dir)
            return _train(exp, run_dir, resume, validate, callbacks)


def _train(exp: Any, run_dir: Path | None, resume: bool, validate: Validate, extra: Sequence[Callback]) -> list[dict]:
    cfg = exp.cfg.train
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategies.build(exp)  # before a restore: a rank of a sharded run loads its own rows
    if strategy.is_lead:  # one notice for a job of several ranks; num_data counts every rank's rows
        note_batch_clamp(cfg.batch_size, strategy.num_data)
    if resume:
        state = RunState.restore(exp, run_dir, resuming=True, local=strategy.restorable)
    else:
        state = RunState(seed=cfg.seed)
    state.summary["optimiser"] = exp.optim.description  # this run's, even where a resume's config changed it
    if exp.data.dynamic:
        state.summary["evaluation_data"] = (
            "dynamic binarization: training batches are fresh Bernoulli draws of the grey images; every evaluation "
            f"uses one fixed Bernoulli draw of each split (seed data.seed + 7 = {exp.cfg.data.seed + 7})"
        )
    return fit(exp, strategy, callbacks(exp, run_dir, validate, extra), state, run_dir)


def callbacks(exp: Any, run_dir: Path | None, validate: Validate, extra: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks of a run, in the order they act: the guard, the checkpoint (the config first), the recipe's
    own, validation, TensorBoard, MLflow, progress, the time budget, ``extra``, and last the signal stop (its end raises
    ``Interrupted`` once every other callback has closed)."""
    cfg = exp.cfg.train
    out: list[Callback] = [NonFiniteGuard()]
    if run_dir is not None:
        out.append(Checkpoint(run_dir))
    out += exp.recipe.callbacks(exp)
    estimate = validate if callable(validate) else exp.recipe.validation(exp) if validate else None
    if estimate is not None and exp.amortized:
        out.append(Validation(estimate))
    if cfg.tensorboard:
        out.append(tensorboard.TensorBoard(run_dir))
    if cfg.mlflow:
        from pyro_lvm.training.callbacks.mlflow import MLflow  # imported only when asked for

        out.append(MLflow(run_dir))
    out.append(Progress())
    if cfg.max_seconds is not None:
        out.append(TimeBudget(cfg.max_seconds))
    return [*out, *extra, StopOnSignal()]
