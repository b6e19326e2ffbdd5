"""Training with P ranks on this machine: steps/s for P = 1 and P = 2 (one thread per rank), and the per-datapoint
rows' memory per rank at N = 2M.

Steps/s: `pyro-lvm train experiments/digits_vae.toml` at batch 1024 for --steps steps, float32, no validation until
the last step, timed by the run's own clock (metrics.json time_s: startup, data loading and torchrun excluded):
P = 1 plain, P = 1 with micro_batches = 2 (the one-process run that two ranks equal), P = 2 via --nproc 2.
Scaling efficiency = (steps/s at P = 2) / (2 × steps/s at P = 1, plain).

Memory: the tensors one rank holds for a per-datapoint guide of N rows, D dimensions (the two tables and RowAdam's
two moments per table and step counts), measured as the bytes of those tensors after one step, for P = 1 and 2.

    OMP_NUM_THREADS=1 python benchmarks/ddp_step.py [--steps 60] [--rows 2000000] [--latent 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pyro_lvm.guides.per_datapoint import PerDatapointGuide
from pyro_lvm.infer.optim import RowAdam
from pyro_lvm.training.strategies.ddp import parts

ROOT = Path(__file__).parents[1]


def steps_per_second(steps: int, nproc: int, extra: list[str], folder: Path) -> float:
    out = folder / f"p{nproc}{len(extra)}"
    sets = [f"train.steps={steps}", "train.batch_size=1024", f"train.eval_every={steps}", "train.progress=false"]
    sets += [f"train.checkpoint_every={steps}", "train.kl_warmup_steps=0", f"train.out_dir={out}", *extra]
    cmd = [sys.executable, "-m", "pyro_lvm", "train", str(ROOT / "experiments" / "digits_vae.toml"), "--overwrite"]
    cmd += ["--nproc", str(nproc), *(f"--set={s}" for s in sets)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    last = json.loads((out / "metrics.json").read_text())["history"][-1]
    return last["step"] / last["time_s"]


def table_bytes(rows: int, latent: int) -> int:
    guide = PerDatapointGuide(rows, latent)
    optim = RowAdam(guide.parameters())
    idx = torch.arange(min(rows, 128))
    loc, scale = guide.local_params(idx)
    (loc.sum() + scale.sum()).backward()
    optim.step()
    tensors = [*guide.parameters(), *(t for state in optim.state.values() for t in state.values())]
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--latent", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = steps_per_second(args.steps, 1, [], Path(tmp))
        chunked = steps_per_second(args.steps, 1, ["train.micro_batches=2"], Path(tmp))
        two = steps_per_second(args.steps, 2, [], Path(tmp))
    print("| run | steps/s |\n|---|---:|")
    print(f"| P = 1 | {one:.2f} |\n| P = 1, micro_batches = 2 | {chunked:.2f} |\n| P = 2 | {two:.2f} |")
    print(f"speed-up P = 2 / P = 1: {two / one:.2f}, scaling efficiency {two / (2 * one):.0%}")
    for p in (1, 2):
        largest = max(len(r) for r in parts(args.rows, p))
        print(
            f"N = {args.rows:,}, D = {args.latent}, P = {p}: {table_bytes(largest, args.latent) / 2**20:,.1f} MiB per rank"
        )


if __name__ == "__main__":
    main()
