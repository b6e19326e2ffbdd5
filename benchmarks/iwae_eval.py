"""Importance-sampled log p̂(x) (K = 5,000 per datapoint): ours against a hand-written vectorised estimator.

Both use the same trained-shape VAE (784-400-50, Bernoulli), the same q(z|x) (the encoder's Gaussian), the same
chunking (``--chunk`` particles at a time, running logsumexp) and the same datapoints; the hand-written version
computes log w = −BCE(decoder(z), x) − ½‖z‖² + ½‖ε‖² + Σ log σ directly. Prints datapoints per second, the ratio,
and the mean difference between the two estimates with its standard error (the draws differ: torch.normal
against randn, so the estimates agree within Monte-Carlo error, not bit for bit). ``--memory`` adds each estimator's
peak memory, each in a fresh process: CUDA peak allocated, or on CPU the peak RSS minus the RSS once data, model and
libraries are loaded (chunking bounds it by the chunk, not by K).

    python benchmarks/iwae_eval.py [--points 1000] [--samples 5000] [--chunk 1000] [--batch 1] [--device cpu]
                                   [--memory]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import pyro
import torch
from tabulate import tabulate
from vae_step import D, HandVAE, child_peak, hand_log_weights, make_data, print_peak, rss_mb

from pyro_lvm.context import scope
from pyro_lvm.evaluation.estimates import estimates_from_q
from pyro_lvm.guides import AmortizedGuide
from pyro_lvm.models.likelihoods import BernoulliLikelihood
from pyro_lvm.models.priors import StandardNormalPrior
from pyro_lvm.models.vae import VAE


@torch.no_grad()
def hand_iwae(vae: HandVAE, x: torch.Tensor, num_samples: int, chunk: int) -> torch.Tensor:
    loc, scale = vae.encoder(x)  # (B, D)
    running = torch.full((x.shape[0],), -math.inf, device=x.device)
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        eps = torch.randn(k, *loc.shape, device=x.device)  # (k, B, D)
        log_w = hand_log_weights(vae.decoder, x, scale, loc + scale * eps, eps)  # (k, B)
        running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
        done += k
    return running - math.log(num_samples)


def library_iwae(vae: HandVAE, x: torch.Tensor, num_samples: int, chunk: int) -> torch.Tensor:
    """The library's estimator on a VAE/guide pair holding the same networks."""
    model = VAE(StandardNormalPrior(D), BernoulliLikelihood(), vae.decoder, D).to(x.device)
    guide = AmortizedGuide(x.shape[-1], D, hidden=[1]).to(x.device)
    guide.encoder = vae.encoder
    with torch.no_grad():
        loc, scale = vae.encoder(x)
    q = pyro.distributions.Normal(loc, scale).to_event(1)
    return estimates_from_q(model, q, x, None, num_samples, chunk)[0]


ESTIMATORS = {"hand-written": hand_iwae, "pyro_lvm": library_iwae}


def evaluate_all(fn, vae: HandVAE, x: torch.Tensor, args: argparse.Namespace) -> torch.Tensor:
    return torch.cat([fn(vae, x[i : i + args.batch], args.samples, args.chunk) for i in range(0, len(x), args.batch)])


def run_one(name: str, args: argparse.Namespace) -> None:
    """Child process of ``--memory``: prints the memory (MB) that evaluating all points adds."""
    device = torch.device(args.device)
    x = make_data(device)[: args.points]
    vae = HandVAE().to(device)
    ESTIMATORS[name](vae, x[:1], 1, 1)  # lazy imports and first allocations are not the estimator's working memory
    before = rss_mb()
    evaluate_all(ESTIMATORS[name], vae, x, args)
    print_peak(args.device, before)


def peak_memory(name: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--one", name, "--points", str(args.points), "--samples", str(args.samples)]
    cmd += ["--chunk", str(args.chunk), "--batch", str(args.batch), "--device", args.device]
    return child_peak(cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1, help="datapoints per call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory, one process each")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    pyro.enable_validation(False)
    if args.one:
        run_one(args.one, args)
        return
    device = torch.device(args.device)
    x = make_data(device)[: args.points]
    vae = HandVAE().to(device)
    results, seconds = {}, {}
    for fn in (hand_iwae, library_iwae):  # warm-up: lazy imports, allocator
        fn(vae, x[:1], args.chunk, args.chunk)
    for name, fn in (("hand-written", hand_iwae), ("pyro_lvm", library_iwae), ("hand-written ", hand_iwae)):
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        values = evaluate_all(fn, vae, x, args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[name.strip()] = min(seconds.get(name.strip(), math.inf), time.perf_counter() - t0)
        results[name.strip()] = values
    diff = results["pyro_lvm"] - results["hand-written"]  # different draws: agree within Monte-Carlo error
    diff_mean, diff_se = float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))
    rows = [[name, args.points / s, s] for name, s in seconds.items()]
    headers = ["estimator", "datapoints / s", "seconds"]
    if args.memory:
        rows = [[*row, peak_memory(row[0], args)] for row in rows]
        headers.append("peak memory (MB)")
    print(f"K = {args.samples}, {args.points} datapoints, chunk {args.chunk}, batch {args.batch}, device {device}")
    print(tabulate(rows, headers=headers, floatfmt=".2f"))
    print(f"ratio (pyro_lvm time / hand-written time): {seconds['pyro_lvm'] / seconds['hand-written']:.2f}")
    print(
        f"mean log p̂(x): pyro_lvm {float(results['pyro_lvm'].mean()):.3f}, hand-written "
        f"{float(results['hand-written'].mean()):.3f}; difference {diff_mean:.3f} ± {diff_se:.3f} nats (1 SE)"
    )


if __name__ == "__main__":
    with scope():  # our modules driven by hand: module-local parameters, as inside pyro_lvm's own calls
        main()
