"""Operations per step: the traced pure step (pyro_lvm/infer/pure.py) against the hand-written step of
benchmarks/vae_step.py, both recorded by ``make_fx`` as forward + backward graphs of ATen operations, counted by
operation (the optimiser is not part of either).

    python benchmarks/op_count.py [--batch 128] [--elbo trace] [--top 12]
"""

from __future__ import annotations

import argparse
from collections import Counter

import pyro
import torch
from tabulate import tabulate
from torch.fx.experimental.proxy_tensor import make_fx
from vae_step import HandVAE, N, make_data

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.data import Dataset, Split
from pyro_lvm.infer.pure import PureStep
from pyro_lvm.training.experiment import Experiment


def ops(graph) -> Counter:
    return Counter(str(n.target) for n in graph.graph.nodes if n.op == "call_function")


def ours(elbo: str, x: torch.Tensor, idx: torch.Tensor) -> Counter:
    cfg = config.from_dict(
        {
            "model": {"latent_dim": 50, "hidden": [400]},
            "guide": {"hidden": [400]},
            "elbo": {"name": elbo, "jit": "off"},
            "train": {"progress": False, "pyro_validation": False},
        }
    )
    tiny = Split(x[:10], torch.zeros(10, dtype=torch.long))
    exp = Experiment.from_config(cfg, Dataset("random", tiny, tiny, tiny, (28, 28), 1, True))
    beta = torch.ones((), dtype=torch.float64)
    return ops(PureStep(exp.elbo, exp.model, exp.guide).trace(x, None, idx, N, beta))


def hand(kind: str, x: torch.Tensor) -> Counter:
    vae = HandVAE()
    params = list(vae.parameters())

    def f(x):
        loss = vae.loss(x, kind, 1)
        return loss, torch.autograd.grad(loss, params)

    return ops(make_fx(f)(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--elbo", default="trace", choices=["trace", "mean_field"])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    pyro.enable_validation(False)
    x = make_data(torch.device("cpu"))[: args.batch]
    idx = torch.arange(args.batch)
    with scope():
        a = ours(args.elbo, x, idx)
    b = hand("hand: MC KL" if args.elbo == "trace" else "hand: analytic KL", x)
    print(f"ATen operations per step (forward + backward), batch {args.batch}, elbo {args.elbo}:")
    print(f"pure step {sum(a.values())}, hand-written {sum(b.values())}")
    names = sorted(set(a) | set(b), key=lambda k: -(a[k] - b[k]))[: args.top]
    rows = [[name, a[name], b[name], a[name] - b[name]] for name in names]
    print(tabulate(rows, headers=["operation", "pure step", "hand-written", "more"]))


if __name__ == "__main__":
    main()
