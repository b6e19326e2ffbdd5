"""AIS speed: chains·steps per second of ``pyro_lvm.evaluation.ais`` (C chains x B datapoints moved by one vectorised
HMC transition per intermediate distribution) against Pyro's ``HMC`` kernel run one chain at a time, on a decoder
of the given shape with random weights (speed does not depend on training) and random binary data.

A "chain·step" is one chain moved through one intermediate distribution: one HMC transition of ``--leapfrog``
leapfrog steps, each a decoder pass and its gradient. Ours is timed over a whole AIS run (``--steps`` distributions,
``--chains`` x ``--points`` chains); Pyro's kernel over ``--pyro-transitions`` transitions of one chain on one
datapoint's f_β (fixed β: a lower bound on its AIS cost), with the same leapfrog count and no adaptation.

    python benchmarks/ais_speed.py [--shape digits|mnist] [--chains 16] [--points 1000] [--steps 50]
                                   [--leapfrog 10] [--pyro-transitions 50] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.mcmc import HMC
from tabulate import tabulate

from pyro_lvm.config.sections import AISConfig
from pyro_lvm.context import scope
from pyro_lvm.evaluation.ais import ais_log_px
from pyro_lvm.guides import log_joint_per_datapoint
from pyro_lvm.models.likelihoods import BernoulliLikelihood
from pyro_lvm.models.priors import StandardNormalPrior
from pyro_lvm.models.vae import VAE
from pyro_lvm.nn.nets import mlp

SHAPES = {"digits": (8, [128, 128], 64), "mnist": (50, [200, 200], 784)}  # (D, decoder hidden, P)


def build(shape: str, points: int, device: str):
    D, hidden, P = SHAPES[shape]
    torch.manual_seed(0)
    model = VAE(StandardNormalPrior(D), BernoulliLikelihood(), mlp([D, *hidden, P]), D).to(device)
    x = torch.bernoulli(torch.full((points, P), 0.3, device=device))
    q = dist.Normal(torch.zeros(points, D, device=device), 0.5 * torch.ones(points, D, device=device)).to_event(1)
    return model, x, q


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours(model, x, q, args) -> float:
    opts = AISConfig(chains=args.chains, steps=args.steps, leapfrog=args.leapfrog)
    sync(args.device)
    start = time.perf_counter()
    ais_log_px(model, q, x, None, opts)
    sync(args.device)
    return args.chains * x.shape[0] * args.steps / (time.perf_counter() - start)


def pyro_kernel(model, x, q, args) -> float:
    """One chain of one datapoint under Pyro's HMC kernel: transitions per second = chain·steps per second."""
    xi, qi, beta = x[:1], dist.Normal(q.base_dist.loc[:1], q.base_dist.scale[:1]).to_event(1), 0.5

    def potential(params):
        z = params["z"]  # (1, D)
        return -((1 - beta) * qi.log_prob(z) + beta * log_joint_per_datapoint(model, xi, None, z[None])[0]).sum()

    kernel = HMC(potential_fn=potential, step_size=0.05, num_steps=args.leapfrog, adapt_step_size=False)
    params = {"z": qi.sample()}
    kernel.initial_params = params
    kernel.setup(warmup_steps=0)
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.pyro_transitions):
        params = kernel.sample(params)
    sync(args.device)
    return args.pyro_transitions / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=list(SHAPES), default="digits")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--pyro-transitions", type=int, default=50)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    pyro.enable_validation(False)
    with scope():
        model, x, q = build(args.shape, args.points, args.device)
        ais_log_px(model, q, x, None, AISConfig(chains=2, steps=2, leapfrog=2))  # warm-up
        ours_rate = ours(model, x, q, args)
        pyro_rate = pyro_kernel(model, x, q, args)
    D, hidden, P = SHAPES[args.shape]
    print(
        f"decoder {D}-{'-'.join(map(str, hidden))}-{P} (Bernoulli), {args.leapfrog} leapfrog steps per transition, "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )
    rows = [
        [f"pyro_lvm AIS ({args.chains} chains x {args.points} points, {args.steps} steps)", f"{ours_rate:,.0f}"],
        ["Pyro HMC kernel, one chain of one datapoint", f"{pyro_rate:,.1f}"],
        ["ratio", f"{ours_rate / pyro_rate:,.0f}x"],
    ]
    print(tabulate(rows, headers=["", "chains·steps / s"]))


if __name__ == "__main__":
    main()
