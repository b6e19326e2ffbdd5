"""The per-step gradient check of the training loop (``pyro_lvm.training.callbacks.guard.gradient_check``) against the step it
guards, in the same run: the digits VAE of experiments/digits_vae.toml, amortized and per-datapoint guides.

    python benchmarks/nonfinite_check.py [--steps 400]
"""

import argparse
import time
import warnings

import torch

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.training.callbacks.guard import gradient_check
from pyro_lvm.training.experiment import Experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    warmup = args.steps // 8
    for guide in ("amortized", "per_datapoint"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the encoder widths are not options of per_datapoint
            cfg = config.load("experiments/digits_vae.toml", [f"guide.name={guide}"])
        exp = Experiment.from_config(cfg)
        check = gradient_check(exp)
        x, g = exp.data.train.x, torch.Generator().manual_seed(0)
        step_s = check_s = 0.0
        for i in range(args.steps):
            idx = torch.randint(0, len(x), (cfg.train.batch_size,), generator=g)
            t0 = time.perf_counter()
            exp.optim.zero_grad()
            loss_and_backward(exp.elbo, exp.model, exp.guide, x[idx], None, idx=idx, num_data=len(x))
            exp.optim.step()
            t1 = time.perf_counter()
            assert check() is None
            t2 = time.perf_counter()
            if i >= warmup:
                step_s, check_s = step_s + t1 - t0, check_s + t2 - t1
        n = args.steps - warmup
        print(
            f"{guide:<14} step {step_s / n * 1e3:.3f} ms   check {check_s / n * 1e3:.3f} ms   "
            f"ratio check/step {check_s / step_s:.3f}"
        )


if __name__ == "__main__":
    with scope():
        main()
