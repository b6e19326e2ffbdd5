"""Steps per second of R replicas of one model in one vmapped call (pyro_lvm/infer/noise.py: the traced step with
its draws as inputs, mapped with torch.func.vmap) against the same R replicas stepped one after another (each its
own traced step), in the same process, rounds interleaved. The loss and gradients only: the optimiser update, the
same elementwise arithmetic on stacked or separate tensors, is left out on both sides.

    python benchmarks/replicas.py [--config experiments/digits_vae.toml] [--replicas 1 4 8 16] [--rounds 5]
        [--steps 20] [--set KEY=VALUE ...] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tabulate import tabulate

import pyro_lvm
from pyro_lvm.context import scope
from pyro_lvm.infer.noise import lift_noise
from pyro_lvm.infer.pure import PureStep


def build(config: str, sets: list[str], seed: int):
    cfg = pyro_lvm.load_config(config, [*sets, f"train.seed={seed}", "elbo.jit=off", "train.pyro_validation=false"])
    exp = pyro_lvm.Experiment.from_config(cfg)
    batch = exp.recipe.batches(exp).batch(0)
    target, c = exp.condition(batch.x, batch.y)
    beta = torch.ones((), dtype=torch.float64)
    pure = PureStep(exp.elbo, exp.model, exp.guide)
    lifted = lift_noise(pure.trace(target, c, batch.idx, len(exp.data.training_rows), beta))
    return pure, lifted, (target, c, batch.idx, beta)


def sequential(replicas: list, compile: bool = False) -> callable:
    step = replicas[0][1].step  # every replica's graph is the same program: one (compiled) function for all
    step = torch.compile(step, dynamic=False) if compile else step

    def run() -> None:
        for pure, lifted, args in replicas:
            with torch.no_grad():
                step(pure.params, pure.state, *args, noise=lifted.draw())

    return run


def vmapped(replicas: list, compile: bool = False) -> callable:
    pure0, lifted, (x0, c0, _, beta) = replicas[0]
    params = [torch.stack(ts) for ts in zip(*(p.params for p, _, _ in replicas), strict=True)]
    state = [torch.stack(ts) for ts in zip(*(p.state for p, _, _ in replicas), strict=True)]
    x = torch.stack([a[0] for _, _, a in replicas])
    c = None if c0 is None else torch.stack([a[1] for _, _, a in replicas])
    idx = torch.stack([a[2] for _, _, a in replicas])
    dims = (0, 0, 0, None if c is None else 0, 0, 0)
    fn = torch.func.vmap(lambda ps, st, x, c, i, eps: lifted.step(ps, st, x, c, i, beta, noise=eps), in_dims=dims)
    fn = torch.compile(fn, dynamic=False) if compile else fn

    def run() -> None:
        noise = tuple(torch.stack(n) for n in zip(*(lf.draw() for _, lf, _ in replicas), strict=True))
        with torch.no_grad():
            fn(params, state, x, c, idx, noise)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/digits_vae.toml")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--compile", action="store_true", help="both sides through torch.compile (inductor)")
    args = parser.parse_args()
    rows = []
    with scope(validation=False):
        for r in args.replicas:
            replicas = [build(args.config, args.sets, seed) for seed in range(r)]
            kinds = {"sequential": sequential(replicas, args.compile), "vmapped": vmapped(replicas, args.compile)}
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for run in kinds.values():
                run()
            for _ in range(args.rounds):
                for name, run in kinds.items():
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        run()
                    times[name].append((time.perf_counter() - t0) / args.steps)
            seq, vec = (statistics.median(times[k]) for k in kinds)
            rows.append([r, 1e3 * seq, 1e3 * vec, r / seq, r / vec, seq / vec])
    print(
        f"{args.config} {' '.join(args.sets)}: torch {torch.__version__}, threads {torch.get_num_threads()}"
        f"{', compiled' if args.compile else ''}"
    )
    headers = ["R", "sequential (ms/step of all)", "vmapped (ms)", "replica-steps/s seq.", "vmapped", "speed-up"]
    print(tabulate(rows, headers=headers, floatfmt=".2f"))


if __name__ == "__main__":
    main()
