"""What ``pyro-lvm diagnose RUN_DIR [RUN_DIR ...]`` computes: PSIS k̂ of every run's guide (and of the prior) on
the same training rows, and NUTS reference posteriors under the first run's decoder with R-hat and ESS."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.diagnostics import (
    MIN_PSIS_DRAWS,
    convergence,
    guide_inference_data,
    guide_khat,
    nuts_reference,
    prior_khat,
)
from pyro_lvm.evaluation.estimates import particle_bytes
from pyro_lvm.resources import require
from pyro_lvm.runs.lock import read_lock
from pyro_lvm.seeding import seeded
from pyro_lvm.studies.run import open_run
from pyro_lvm.studies.theory_plots import guide_vs_nuts

KHAT_BAD = 0.7


@dataclass
class DiagnoseOptions:
    num_points: int = 20  # training rows for PSIS (every guide, including per-datapoint tables, holds them)
    num_samples: int = 2000  # importance samples per datapoint for k̂ (at least MIN_PSIS_DRAWS = 30)
    nuts_points: int = 4
    nuts_chains: int = 4
    nuts_samples: int = 1000
    nuts_warmup: int = 500
    seed: int = 0
    trust_plugins: bool = False  # import every plugin module the runs' configs name (config/trust.py)


def _khat_row(name: str, khat: np.ndarray) -> dict:
    return {
        "proposal": name,
        "mean_khat": float(khat.mean()),
        "max_khat": float(khat.max()),
        "share_khat_gt_0.7": float((khat > KHAT_BAD).mean()),
        "khat": khat.tolist(),
    }


@scoped
def diagnose(run_dirs: list[str], opts: DiagnoseOptions, out_dir: str | Path | None = None) -> dict:
    if not run_dirs:
        raise PyroLVMError("give at least one run folder: pyro-lvm diagnose RUN_DIR [RUN_DIR ...]")
    if opts.num_samples < MIN_PSIS_DRAWS:  # refused on every ArviZ line, before a run folder is opened
        raise PyroLVMError(
            f"--num-samples {opts.num_samples} is too few for PSIS k-hat: its Pareto tail is the largest fifth of the "
            f"draws and needs 6 of them; give --num-samples {MIN_PSIS_DRAWS} or more"
        )
    with contextlib.ExitStack() as locks:  # every run folder read, as evaluate does (runs/lock.py)
        for run_dir in run_dirs:
            locks.enter_context(read_lock(Path(run_dir)))
        return _diagnose(run_dirs, opts, out_dir)


def _diagnose(run_dirs: list[str], opts: DiagnoseOptions, out_dir: str | Path | None) -> dict:
    rows = []
    for i, run_dir in enumerate(run_dirs):
        exp, run_dir = open_run(run_dir, trust_plugins=opts.trust_plugins)
        if exp.recipe.name == "semi_supervised":
            raise PyroLVMError(
                f"{str(run_dir)!r} holds the semi-supervised model m2, whose label is discrete: PSIS k-hat and NUTS "
                "here diagnose the continuous z of a VAE or CVAE; use pyro-lvm evaluate for m2"
            )
        n = min(opts.num_points, len(exp.data.train))
        check_memory(exp, opts, n, nuts=i == 0)
        if i == 0:
            first = exp, run_dir  # NUTS and the output folder use the first run
        target, c = exp.condition(exp.data.train.x[:n], exp.data.train.y[:n])
        idx = torch.arange(n, device=target.device)
        with seeded(opts.seed):
            if i == 0:
                rows.append(
                    _khat_row(f"prior p(z) [{run_dir.name}]", prior_khat(exp.model, target, c, opts.num_samples))
                )
            khat = guide_khat(exp.model, exp.guide, target, c, idx, len(exp.data.train), opts.num_samples)
        rows.append(_khat_row(f"{exp.cfg.guide.name} [{run_dir.name}]", khat))
    exp, run_dir = first
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    result = {"num_points": opts.num_points, "num_samples": opts.num_samples, "psis": rows}
    if opts.nuts_points > 0:
        result["nuts"] = _nuts(exp, opts, out)
    (out / "diagnostics.json").write_text(json.dumps(result, indent=2))
    result["out_dir"] = str(out)
    return result


def check_memory(exp, opts: DiagnoseOptions, n: int, nuts: bool) -> None:
    """Refuse, before drawing, what the device cannot hold: PSIS draws all ``num_samples`` importance samples of the
    ``n`` rows at once; NUTS keeps every chain's draws (float64, copied into ArviZ's posterior: ~4 copies)."""
    require(
        opts.num_samples * n * particle_bytes(exp.model, exp.data.train.x),
        f"PSIS k-hat with --num-samples {opts.num_samples:,} draws for each of {n:,} rows",
        "lower --num-samples or --num-points",
        exp.device,
    )
    if nuts and opts.nuts_points > 0:
        points = min(opts.nuts_points, len(exp.data.train))
        draws = opts.nuts_chains * opts.nuts_samples
        require(
            32 * draws * points * exp.cfg.model.latent_dim,
            f"NUTS with --nuts-chains {opts.nuts_chains} x --nuts-samples {opts.nuts_samples:,} draws of {points} rows",
            "lower --nuts-samples, --nuts-chains or --nuts-points",
            exp.device,
        )


def _nuts(exp, opts: DiagnoseOptions, out: Path) -> dict:
    n = min(opts.nuts_points, len(exp.data.train))
    target, c = exp.condition(exp.data.train.x[:n], exp.data.train.y[:n])
    idx = torch.arange(n, device=target.device)
    ref = nuts_reference(exp.model, target, c, opts.nuts_chains, opts.nuts_samples, opts.nuts_warmup, opts.seed)
    stats = convergence(ref)
    with seeded(opts.seed):
        q = guide_inference_data(exp.guide, target, c, idx, len(exp.data.train), opts.nuts_samples)
    nuts_z = ref.posterior["z"].values.reshape(-1, n, exp.cfg.model.latent_dim)  # (C*S, B, D)
    guide_z = q.posterior["z"].values[0]  # (S, B, D)
    guide_vs_nuts(nuts_z, guide_z, out / "guide_vs_nuts.png")
    return {
        "chains": opts.nuts_chains,
        "draws": opts.nuts_samples,
        "rhat": stats["rhat"].tolist(),
        "ess_bulk": stats["ess_bulk"].tolist(),
        "nuts_mean": nuts_z.mean(0).tolist(),
        "guide_mean": guide_z.mean(0).tolist(),
    }


def print_diagnosis(result: dict) -> None:
    print(f"PSIS k̂ on {result['num_points']} training rows, {result['num_samples']} draws each (k̂ > 0.7: unreliable):")
    print(
        tabulate(
            [
                [r["proposal"], r["mean_khat"], r["max_khat"], f"{100 * r['share_khat_gt_0.7']:.0f}%"]
                for r in result["psis"]
            ],
            headers=["proposal", "mean k̂", "max k̂", "share k̂ > 0.7"],
            floatfmt=".2f",
        )
    )
    if "nuts" in result:
        nuts = result["nuts"]
        print(f"NUTS reference posteriors ({nuts['chains']} chains x {nuts['draws']} draws):")
        print(
            tabulate(
                [[i, r, e] for i, (r, e) in enumerate(zip(nuts["rhat"], nuts["ess_bulk"], strict=True))],
                headers=["datapoint", "max R-hat", "min bulk ESS"],
                floatfmt=(".0f", ".4f", ".0f"),
            )
        )
    print(f"wrote {Path(result['out_dir']) / 'diagnostics.json'}")
