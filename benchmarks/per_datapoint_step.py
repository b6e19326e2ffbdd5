"""Per-datapoint guide: step time against the number of datapoints N (issue: cost must not grow with N).

Runs our training step (Trace_ELBO.differentiable_loss, dense Adam for the decoder, RowAdam for the (N, D)
tables) at N = 10k, 60k, 600k (and optionally 1M), batch 128, D = 50, on random binary 784-pixel data, and
prints the median step time and the ratio to the N = 10k step measured in the same run, plus peak RSS.

    python benchmarks/per_datapoint_step.py [--sizes 10000 60000 600000] [--steps 60]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.data import Dataset, Split
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.training.experiment import Experiment


def step_times(n: int, steps: int, batch: int, latent: int) -> list[float]:
    cfg = config.from_dict(
        {
            "model": {"latent_dim": latent, "hidden": [400]},
            "guide": {"name": "per_datapoint"},
            "train": {"batch_size": batch, "progress": False},
        }
    )
    x = torch.bernoulli(torch.full((n, 784), 0.3))
    split = Split(x, torch.zeros(n, dtype=torch.long))
    small = Split(x[:10], split.y[:10])
    exp = Experiment.from_config(cfg, Dataset("random", split, small, small, (28, 28), 1, True))
    times = []
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        start = time.perf_counter()
        exp.optim.zero_grad()
        loss_and_backward(exp.elbo, exp.model, exp.guide, x[idx], None, idx=idx, num_data=n)
        exp.optim.step()
        times.append(time.perf_counter() - start)
    return times[5:]  # drop warm-up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 600_000])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--latent", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    ref = None
    print(f"{'N':>10} {'median step (ms)':>18} {'ratio to first':>15} {'peak RSS (MB)':>14}")
    for n in args.sizes:
        med = statistics.median(step_times(n, args.steps, args.batch, args.latent)) * 1e3
        ref = ref or med
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n:>10} {med:>18.2f} {med / ref:>15.2f} {rss:>14.0f}", flush=True)


if __name__ == "__main__":
    with scope():  # our modules driven by hand: module-local parameters, as inside pyro_lvm's own calls
        main()
