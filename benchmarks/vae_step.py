"""Our amortized VAE training step, per ELBO, against the fastest honest hand-written PyTorch step.

Same architecture (784-400-50 encoder with softplus, 50-400-784 decoder, Bernoulli likelihood), same objective
estimator, same optimiser (one torch Adam), same batch gather from 60k random binary images:

- ``trace``  vs  hand-written: fused BCE-with-logits + single-sample KL (log q(z) − log p(z))
- ``mean_field``  vs  hand-written: fused BCE-with-logits + analytic Gaussian KL
- ``renyi`` (α = 0, K particles, vectorised: the IWAE bound)  vs  hand-written vectorised IWAE

Each ELBO runs with every ``elbo.jit`` mode given by ``--jit`` (default: ``auto``, the library's default, which
compiles ``trace`` and ``mean_field``; and ``off``, the plain Pyro ELBO); ``renyi`` has no compiled form.

Steps of all methods are interleaved in rounds, so drifts of the machine hit every method alike; the table gives
the median step time, the ratio to its reference measured in the same run, and the quartiles of the per-round
ratios. ``--memory`` adds the peak RSS (CPU) or peak CUDA memory of each method, each in its own process.

``--fused`` gives both sides torch's fused Adam kernel (ours: ``optim.fused = true``).

    python benchmarks/vae_step.py [--batch 128 1024] [--elbos trace mean_field renyi]
        [--jit auto off pure compiled graph] [--compiled-ref] [--graph-ref]
        [--device cpu] [--rounds 10] [--steps 20] [--memory] [--fused]

``--jit`` picks the step kinds: ``auto``/``off`` (the eager step through Pyro's JIT, or plain), ``pure`` and
``compiled`` (``train.step = "traced"`` / ``"compiled"``: the pure step function, pyro_lvm/infer/pure.py) and
``graph`` (``train.step = "graph"``, CUDA). ``--compiled-ref`` adds the hand-written step through torch.compile,
``--graph-ref`` (CUDA) the hand-written step captured as a CUDA graph, as further references.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time

import pyro
import torch
from tabulate import tabulate
from torch import nn
from torch.nn import functional as F

from pyro_lvm import config
from pyro_lvm.context import scope
from pyro_lvm.data import Dataset, Split
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.infer.pure import PureStep
from pyro_lvm.nn.nets import GaussianHead, mlp
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.strategies.graph import GraphStrategy

N, P, H, D = 60_000, 784, 400, 50
LOG_2PI = math.log(2 * math.pi)
REFERENCE = {"trace": "hand: MC KL", "mean_field": "hand: analytic KL", "renyi": "hand: IWAE"}
JIT_OFF = " (jit off)"  # a method name's suffix: the plain Pyro ELBO
PURE = " (pure)"  # the traced pure step (pyro_lvm.infer.pure), train.step = "traced"
COMPILED = " (pure, compiled)"  # the same, through torch.compile: train.step = "compiled"
GRAPH = " (CUDA graph)"  # the pure step and the update captured as one CUDA graph: train.step = "graph"
SUFFIXES = {"off": JIT_OFF, "auto": "", "pure": PURE, "compiled": COMPILED, "graph": GRAPH}
HAND_COMPILED = " + torch.compile"  # a reference's suffix: the hand-written loss through torch.compile
HAND_GRAPH = " + CUDA graph"  # a reference's suffix: the hand-written step (and Adam) captured as a CUDA graph


def base_name(method: str) -> str:
    for suffix in (JIT_OFF, COMPILED, PURE, GRAPH, HAND_COMPILED, HAND_GRAPH):
        method = method.removesuffix(suffix)
    return method


def hand_log_weights(decoder: nn.Module, x: torch.Tensor, scale: torch.Tensor, z: torch.Tensor, eps: torch.Tensor):
    """log w = log p(x|z) + log N(z; 0, I) − log q(z|x) for z = loc + scale · eps, (K, B); the 2π terms cancel."""
    logits = decoder(z)  # (K, B, P)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    return log_lik - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2).sum(-1) + scale.log().sum(-1)


class HandVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = GaussianHead(P, [H], D)
        self.decoder = mlp([D, H, P])

    def loss(self, x: torch.Tensor, kind: str, particles: int) -> torch.Tensor:
        """Negative ELBO (or IWAE bound) summed over the batch, scaled by N / B like the library's plate."""
        loc, scale = self.encoder(x)
        scale_n = N / x.shape[0]
        if kind == "hand: IWAE":
            eps = torch.randn(particles, *loc.shape, device=x.device)  # (K, B, D)
            log_w = hand_log_weights(self.decoder, x, scale, loc + scale * eps, eps)  # (K, B)
            return -scale_n * (torch.logsumexp(log_w, 0) - math.log(particles)).sum()
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        nll = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        if kind == "hand: analytic KL":
            kl = 0.5 * (scale**2 + loc**2 - 1).sum() - scale.log().sum()
        else:  # log q(z) - log p(z) at the sample: the Trace_ELBO estimator
            kl = (0.5 * (z**2 - eps**2)).sum() - scale.log().sum()
        return scale_n * (nll + kl)


def make_data(device: torch.device) -> torch.Tensor:
    """60k random binary images, built in chunks so that no transient copy inflates the peak-memory figures."""
    g = torch.Generator().manual_seed(0)
    data = torch.empty(N, P)
    for start in range(0, N, 5000):
        data[start : start + 5000] = torch.bernoulli(torch.full((5000, P), 0.3), generator=g)
    return data.to(device)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def print_peak(device: str, rss_before: float) -> None:
    """In a ``--one`` child: print its peak memory in MB, CUDA peak allocated or peak RSS minus ``rss_before``."""
    import resource

    if device.startswith("cuda"):
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before)


def child_peak(cmd: list[str]) -> float:
    """Run a ``--one`` child and read the peak it prints on its last line."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def library_step(method: str, batch: int, particles: int, data: torch.Tensor, device: str, fused: bool = False):
    """``method``: an ELBO name (``elbo.jit = 'auto'``) or one with a suffix of SUFFIXES."""
    elbo = base_name(method)
    pure = method.endswith((PURE, COMPILED, GRAPH))
    jit = "off" if method.endswith(JIT_OFF) or pure else "auto"
    cfg = config.from_dict(
        {
            "model": {"latent_dim": D, "hidden": [H]},
            "guide": {"hidden": [H]},
            "elbo": {"name": elbo, "num_particles": particles if elbo == "renyi" else 1, "jit": jit}
            | ({"alpha": 0.0} if elbo == "renyi" else {}),
            "train": {"batch_size": batch, "progress": False, "pyro_validation": False, "device": device},
            "optim": {"fused": fused},
        }
    )
    tiny = Split(data[:10].cpu(), torch.zeros(10, dtype=torch.long))
    exp = Experiment.from_config(cfg, Dataset("random", tiny, tiny, tiny, (28, 28), 1, True))
    g = torch.Generator().manual_seed(1)

    if method.endswith(GRAPH):
        return graph_step(exp, batch, data, g)
    pure_step = PureStep(exp.elbo, exp.model, exp.guide, compile=method.endswith(COMPILED)) if pure else None

    def step() -> None:
        idx = torch.randint(0, N, (batch,), generator=g).to(data.device)
        exp.optim.zero_grad()
        if pure_step is None:
            loss_and_backward(exp.elbo, exp.model, exp.guide, data[idx], None, idx=idx, num_data=N)
        elif pure_step(data[idx], None, idx=idx, num_data=N) is None:
            raise RuntimeError(f"{method}: {pure_step.failure}")
        exp.optim.step()

    return step


def graph_step(exp: Experiment, batch: int, data: torch.Tensor, g: torch.Generator):
    """The library's ``graph`` strategy driven on the benchmark's batches (its plate size set to the data's N)."""
    strategy = GraphStrategy(exp, exp.recipe)
    strategy.num_data = N

    def step() -> None:
        idx = torch.randint(0, N, (batch,), generator=g).to(data.device)
        strategy.zero_grad()
        strategy.step_on(data[idx], None, idx, 1.0)
        strategy.update()
        if strategy.eager_reason is not None:
            raise RuntimeError(f"graph step: {strategy.eager_reason}")

    return step


def hand_graph_step(kind: str, batch: int, particles: int, data: torch.Tensor):
    """PyTorch's whole-network capture: static batch buffer, loss, backward and a capturable Adam in one graph."""
    vae = HandVAE().to(data.device)
    optim = torch.optim.Adam(vae.parameters(), lr=1e-3, capturable=True)
    g = torch.Generator().manual_seed(1)
    static_x = data[:batch].clone()

    def run() -> None:
        optim.zero_grad(set_to_none=False)
        vae.loss(static_x, kind, particles).backward()
        optim.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()

    def step() -> None:
        idx = torch.randint(0, N, (batch,), generator=g).to(data.device)
        static_x.copy_(data[idx])
        graph.replay()

    return step


def hand_step(kind: str, batch: int, particles: int, data: torch.Tensor, fused: bool = False):
    """The hand-written step; a ``kind`` ending in HAND_COMPILED runs its loss and backward through torch.compile
    (inductor): the fastest honest CPU step we know how to write."""
    if kind.endswith(HAND_GRAPH):
        return hand_graph_step(kind.removesuffix(HAND_GRAPH), batch, particles, data)
    vae = HandVAE().to(data.device)
    optim = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=fused or None)
    g = torch.Generator().manual_seed(1)
    loss = torch.compile(vae.loss, fullgraph=True) if kind.endswith(HAND_COMPILED) else vae.loss
    kind = kind.removesuffix(HAND_COMPILED)

    def step() -> None:
        idx = torch.randint(0, N, (batch,), generator=g).to(data.device)
        optim.zero_grad()
        loss(data[idx], kind, particles).backward()
        optim.step()

    return step


def method_names(elbos: list[str], jits: list[str]) -> list[str]:
    """Library methods to time: each ELBO under each jit mode (renyi, which has no compiled form, once)."""
    names = []
    for elbo in elbos:
        if elbo == "renyi":
            names.append(elbo)
        else:
            names += [elbo + SUFFIXES[jit] for jit in jits]
    return names


def methods(names: list[str], batch: int, particles: int, data: torch.Tensor, device: str, fused: bool, refs) -> dict:
    steps = {}
    for name in names:
        steps[name] = library_step(name, batch, particles, data, device, fused)
        for ref in refs(name):
            if ref not in steps:
                steps[ref] = hand_step(ref, batch, particles, data, fused)
    return steps


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(steps: dict, rounds: int, per_round: int, device: str) -> dict[str, list[float]]:
    """Per-round mean step times (s) of every method, rounds interleaved."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up: tracing, allocator, caches
        for _ in range(5):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            sync(device)
            times[name].append((time.perf_counter() - t0) / per_round)
    return times


def ratio_spread(ours: list[float], ref: list[float]) -> str:
    """The quartiles of the per-round ratios: rounds are interleaved, so a drift of the machine hits both sides of
    a round alike, and the spread shows how far one run's ratio can be trusted."""
    q1, _, q3 = statistics.quantiles([a / b for a, b in zip(ours, ref, strict=True)], n=4)
    return f"{q1:.2f}-{q3:.2f}"


def peak_memory(name: str, batch: int, particles: int, device: str, fused: bool) -> float:
    """Memory in MB that 30 steps of ``name`` add, run alone in a fresh process: CUDA peak allocated, or on CPU
    the peak RSS minus the RSS after data, model and libraries are loaded (the step's own working memory)."""
    cmd = [sys.executable, __file__, "--one", name, "--batch", str(batch), "--particles", str(particles)]
    cmd += ["--device", device] + (["--fused"] if fused else [])
    return child_peak(cmd)


def run_one(name: str, batch: int, particles: int, device: str, fused: bool) -> None:
    data = make_data(torch.device(device))
    step = (
        hand_step(name, batch, particles, data, fused)
        if name.startswith("hand")
        else library_step(name, batch, particles, data, device, fused)
    )
    before = rss_mb()
    for _ in range(30):
        step()
    print_peak(device, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--elbos", nargs="+", default=list(REFERENCE))
    parser.add_argument(
        "--jit",
        nargs="+",
        default=["auto", "off"],
        choices=list(SUFFIXES),
        help="step kinds: "
        "auto (Pyro's JIT), off (plain Pyro), pure (train.step = traced), compiled (train.step = compiled)",
    )
    parser.add_argument("--compiled-ref", action="store_true", help="also the hand-written step via torch.compile")
    parser.add_argument("--graph-ref", action="store_true", help="also the hand-written step as a CUDA graph")
    parser.add_argument("--particles", type=int, default=5, help="K of the renyi/IWAE rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="steps per method per round")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory, one process per method")
    parser.add_argument("--fused", action="store_true", help="fused Adam on both sides")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    pyro.enable_validation(False)
    if args.one:
        run_one(args.one, args.batch[0], args.particles, args.device, args.fused)
        return
    data = make_data(torch.device(args.device))
    rows = []
    names = method_names(args.elbos, args.jit)

    def refs(name: str) -> list[str]:
        ref = REFERENCE[base_name(name)]
        extra = [ref + HAND_COMPILED] if args.compiled_ref else []
        extra += [ref + HAND_GRAPH] if args.graph_ref else []
        return [ref] + (extra if ref != REFERENCE["renyi"] else [])

    for batch in args.batch:
        steps = methods(names, batch, args.particles, data, args.device, args.fused, refs)
        times = time_methods(steps, args.rounds, args.steps, args.device)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, ref in [(m, r) for m in names for r in refs(m)]:
            row = [batch, name, ref, 1e3 * medians[name], 1e3 * medians[ref], medians[name] / medians[ref]]
            row.append(ratio_spread(times[name], times[ref]))
            if args.memory:
                row += [
                    peak_memory(name, batch, args.particles, args.device, args.fused),
                    peak_memory(ref, batch, args.particles, args.device, args.fused),
                ]
            rows.append(row)
    headers = ["batch", "ours", "reference", "ours (ms)", "reference (ms)", "ratio", "per-round ratio IQR"]
    if args.memory:
        headers += ["ours step mem. (MB)", "ref. step mem. (MB)"]
    print(
        f"device {args.device}, torch {torch.__version__}, pyro {pyro.__version__}, threads {torch.get_num_threads()}, "
        f"Adam {'fused' if args.fused else 'for-loop (default)'}"
    )
    print(tabulate(rows, headers=headers, floatfmt=".2f"))


if __name__ == "__main__":
    with scope():  # our modules driven by hand: module-local parameters, as inside pyro_lvm's own calls
        main()
