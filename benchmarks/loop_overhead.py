"""What the training loop adds around the step: per-step time inside ``pyro_lvm.train`` (batches, the non-finite
guard, the β = 1 bound, metrics rows, checkpoints into a run folder, the progress bar) against the same strategy's
step taken alone in a tight loop (batches included), per step kind, interleaved in rounds.

    python benchmarks/loop_overhead.py [--config experiments/digits_vae.toml] [--steps 300] [--rounds 3]
        [--kinds eager traced compiled] [--set KEY=VALUE ...]

The ratio column is loop / isolated step, measured in the same process and round. The isolated step runs at
β = 1: give ``--set train.kl_warmup_steps=0`` to compare like with like (during KL warm-up the loop also computes
the bound at β = 1 from the same draws, one more forward pass a step).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

import pyro_lvm
from pyro_lvm.context import scope
from pyro_lvm.training import strategies


def build(config: str, kind: str, steps: int, sets: list[str]):
    cfg = pyro_lvm.load_config(config, [*sets, f"train.step={kind}", f"train.steps={steps}", "train.progress=true"])
    return pyro_lvm.Experiment.from_config(cfg)


def isolated(exp) -> float:
    """Seconds per step of the strategy alone (the loop's calls without its callbacks)."""
    with scope(validation=False):
        strategy = strategies.build(exp)
        for s in range(strategy.batches.steps_per_epoch + 1):  # warm-up: every batch shape's trace or compilation
            strategy.zero_grad()
            strategy.step(s, 1.0)
            strategy.update()
        steps = exp.cfg.train.steps
        t0 = time.perf_counter()
        for s in range(steps):
            strategy.zero_grad()
            strategy.step(s, 1.0)
            strategy.update()
        return (time.perf_counter() - t0) / steps


def in_loop(exp, folder: Path) -> float:
    """Seconds per step inside ``train`` with a run folder and progress bar, the first epoch and a step (every batch
    shape's trace or compilation) excluded."""
    marks: dict[int, float] = {}
    first = None

    class Clock(pyro_lvm.Callback):
        def on_step_end(self, fit) -> None:
            nonlocal first
            first = first or fit.strategy.batches.steps_per_epoch + 1
            if fit.state.step in (first, exp.cfg.train.steps):
                marks[fit.state.step] = time.perf_counter()

    pyro_lvm.train(exp, folder, overwrite=True, callbacks=[Clock()])
    return (marks[exp.cfg.train.steps] - marks[first]) / (exp.cfg.train.steps - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/digits_vae.toml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["eager", "traced"])
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for kind in args.kinds:
                times.setdefault((kind, "step"), []).append(isolated(build(args.config, kind, args.steps, args.sets)))
                exp = build(args.config, kind, args.steps, args.sets)
                times.setdefault((kind, "loop"), []).append(in_loop(exp, Path(tmp) / kind))
    rows = []
    for kind in args.kinds:
        step, loop = (statistics.median(times[kind, what]) for what in ("step", "loop"))
        rows.append([kind, 1e3 * step, 1e3 * loop, loop / step])
    print(f"{args.config} {' '.join(args.sets)}: torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(tabulate(rows, headers=["step kind", "step alone (ms)", "in train (ms)", "ratio"], floatfmt=".3f"))


if __name__ == "__main__":
    main()
