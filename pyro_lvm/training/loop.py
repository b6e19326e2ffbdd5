"""The training loop: SVI steps with one torch optimiser. It knows no model kind, no rank and no device: the
strategy takes the step, the callbacks do everything else (guards, checkpoints, validation, logs, progress, time
budgets, a model kind's own preparation), and the run state holds where the run stands.

The loss is the negative ELBO of the whole training set estimated from a batch (plate scaling N/B). Each history
row averages, per datapoint and in nats, over the steps since the previous row:
- ``train_objective`` = −loss / N, what the optimiser minimised (β-weighted during KL warm-up);
- ``train_elbo`` = the configured bound at β = 1 (the ELBO; IWAE/Rényi for ``renyi``) on the same batches and draws:
  equal to ``train_objective`` once β = 1, one extra forward pass per step while β < 1;
- ``beta`` at the row's last step; callbacks may add to a row (``val_elbo``) before it joins the history.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.state import RunState
from pyro_lvm.training.strategies.base import Strategy


def kl_beta(step: int, warmup: int) -> float:
    """KL annealing weight: rises linearly from ~0 to 1 over ``warmup`` steps, β_s = min(1, (s + 1) / warmup)."""
    return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)


@dataclass
class Fit:
    """What the callbacks see of a fit in progress."""

    exp: Any
    strategy: Strategy
    state: RunState
    run_dir: Path | None
    beta: float = 1.0
    elapsed: float = 0.0  # seconds of training, this run's and those before a resume
    stop: bool = False  # set by a callback (a time budget, a signal): the loop ends after this step, as at its last
    # (one rank's request is agreed by all ranks once per step, by the loop)
    finished: bool = False  # the loop reached its last step (or a stop) without an error


def fit(exp: Any, strategy: Strategy, callbacks: Sequence[Callback], state: RunState, run_dir=None) -> list[dict]:
    """Train ``exp`` from ``state`` to ``train.steps`` steps (or until a callback stops it); returns the history."""
    cfg = exp.cfg.train
    run = Fit(exp, strategy, state, run_dir)
    n, steps_per_epoch = strategy.num_data, strategy.batches.steps_per_epoch
    eval_every = cfg.eval_every or steps_per_epoch
    window: list[tuple[float, float]] = []  # (objective, bound at beta = 1) per step
    try:
        for cb in callbacks:
            cb.on_fit_start(run)
        state.start_stream()
        t0 = time.perf_counter() - state.elapsed
        while state.step < cfg.steps:
            strategy.zero_grad()
            run.beta = kl_beta(state.step, cfg.kl_warmup_steps)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Encountered NaN")
                value, bound = strategy.step(state.step, run.beta)  # the loss, and the bound at beta = 1 per datapoint
                # (floats; device tensors for a deferred step kind)
            for cb in callbacks:
                cb.before_update(run, value)
            strategy.update()
            state.step += 1
            window.append((-value / n, bound))
            run.elapsed = time.perf_counter() - t0
            for cb in callbacks:
                cb.on_step_end(run)
            run.stop = strategy.any(run.stop)  # a stop one rank asks for is every rank's, at this step
            done = state.step == cfg.steps or run.stop
            if state.step % eval_every == 0 or done:
                row = {
                    "step": state.step,
                    "epoch": state.step / steps_per_epoch,
                    # float(): a deferred step's values are device tensors, read here and not per step
                    "train_elbo": float(sum(b for _, b in window)) / len(window),
                    "train_objective": float(sum(o for o, _ in window)) / len(window),
                    "beta": run.beta,
                    "time_s": time.perf_counter() - t0,
                }
                window = []
                for cb in callbacks:
                    cb.on_row(run, row)
                state.history.append(row)
            if state.step % cfg.checkpoint_every == 0 or done:
                for cb in callbacks:
                    cb.on_checkpoint(run)
            if done:
                break
        run.finished = True
    finally:
        _end(callbacks, run)
    return state.history


def _end(callbacks: Sequence[Callback], run: Fit) -> None:
    """Every callback's ``on_fit_end``, even when one raises (each may hold something to close or put back); the
    first error is raised once all have run."""
    first: BaseException | None = None
    for cb in callbacks:
        try:
            cb.on_fit_end(run)
        except BaseException as err:  # noqa: BLE001 - re-raised below, after the others have closed
            first = first or err
    if first is not None:
        raise first
