"""The amortized flow guide's training step against the Gaussian amortized guide's, in the same run: the model and
data of experiments/digits_vae.toml (or --config), interleaved rounds, median step time and the ratio per round.

    python benchmarks/flow_step.py [--config experiments/digits_vae.toml] [--rounds 10] [--steps 20]
"""

import argparse
import statistics
import time

import torch
from tabulate import tabulate

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.training.experiment import Experiment

VARIANTS = {
    "amortized (Gaussian)": ["guide.name=amortized"],
    "amortized_flow, 2 affine": ["guide.name=amortized_flow"],
    "amortized_flow, 4 affine": ["guide.name=amortized_flow", "guide.flows=4"],
    "amortized_flow, 2 spline": ["guide.name=amortized_flow", "guide.kind=spline"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/digits_vae.toml")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args()
    exps = {}
    for name, sets in VARIANTS.items():
        extra = [f"train.batch_size={args.batch}"] if args.batch else []
        exps[name] = Experiment.from_config(config.load(args.config, [*sets, *extra]))
    times: dict[str, list[float]] = {name: [] for name in exps}
    g = torch.Generator().manual_seed(0)
    for r in range(args.rounds + 1):  # round 0 warms up (and compiles each batch shape)
        for name, exp in exps.items():
            x = exp.data.train.x
            t0 = time.perf_counter()
            for _ in range(args.steps):
                idx = torch.randint(0, len(x), (exp.cfg.train.batch_size,), generator=g)
                exp.optim.zero_grad()
                loss_and_backward(exp.elbo, exp.model, exp.guide, x[idx], None, idx=idx, num_data=len(x))
                exp.optim.step()
            if r:
                times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    ref = times["amortized (Gaussian)"]
    rows = []
    for name, t in times.items():
        ratios = sorted(a / b for a, b in zip(t, ref, strict=True))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows.append(
            [name, statistics.median(t), statistics.median(t) / statistics.median(ref), f"{q[0]:.2f}-{q[2]:.2f}"]
        )
    print(f"{args.config}, batch {next(iter(exps.values())).cfg.train.batch_size}, torch {torch.__version__}")
    print(tabulate(rows, headers=["guide", "ms per step", "ratio", "per-round ratio IQR"], floatfmt=".2f"))


if __name__ == "__main__":
    with scope():
        main()
