"""``pyro-lvm compare``: amortized vs per-datapoint vs semi-amortized inference on the same data, decoder
architecture and budget, and the Cremer et al. (2018) gap decomposition on one trained decoder:

    log p(x) ≈ log p̂(x)   (IWAE, K samples)
    approximation gap = log p̂(x) − L[q*]     (the Gaussian family's limit)
    amortization gap  = L[q*] − L[q]          (the encoder's shortfall against the best q per datapoint)

Each method trains in its own subprocess (``pyro-lvm train``), so its peak RSS is its own (``os.wait4``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from pyro_lvm import config as config_mod
from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import Estimate, estimates_from_q, guide_distribution, mixture_log_px
from pyro_lvm.guides import refine
from pyro_lvm.infer.local_inference import fit_local
from pyro_lvm.registry import GUIDES
from pyro_lvm.studies import plots
from pyro_lvm.studies.compare_report import gap_warnings, print_comparison
from pyro_lvm.studies.run import open_run


def guide_config(cfg: Config, guide: str, run_dir: Path) -> Config:
    """The config one guide of the comparison trains with: [guide]'s options that this guide has, then its
    ``compare.guide_options``; every other section as given."""
    raw = config_mod.to_dict(cfg)
    foreign = {"name", *config_mod.foreign_options("guide", raw["guide"], guide)}
    own = {k: v for k, v in raw["guide"].items() if k not in foreign}
    raw["guide"] = {**own, **cfg.compare.guide_options.get(guide, {}), "name": guide}
    raw["train"]["out_dir"] = str(run_dir)
    return config_mod.from_dict(raw)


def refinement_lr(cfg: Config) -> float:
    """compare.refine_lr, else the semi-amortized guide's refine_lr (guide_options, then [guide]), else its default."""
    if cfg.compare.refine_lr is not None:
        return cfg.compare.refine_lr
    semi = cfg.compare.guide_options.get("semi_amortized", {})
    default = GUIDES.schema("semi_amortized").model_fields["refine_lr"].default
    return semi.get("refine_lr", getattr(cfg.guide, "refine_lr", default))


def _train_subprocess(cfg: Config, guide: str, run_dir: Path) -> dict:
    config_file = run_dir.parent / f"{guide}.toml"  # beside the run folder, which --overwrite replaces
    config_mod.save(guide_config(cfg, guide, run_dir), config_file)
    cmd = [sys.executable, "-m", "pyro_lvm.cli", "train", str(config_file), "--overwrite"]
    start = time.perf_counter()
    # stdout (the per-run table) is dropped: compare prints its own; stderr (progress, errors) reaches the user.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # wait4, not wait: it returns this child's own peak RSS
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise PyroLVMError(f"training the {guide} guide failed (exit {code}); see the message above")
    return {"process_wall_s": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024}


# q* is fitted for up to this many rows at once: the fit's stopping rule looks at the block's mean ELBO, and its
# memory is qstar_samples (10) x block x (P + decoder widths) floats (~31 MB of pixels at 784 pixels).
QSTAR_BLOCK = 1000


def _qstar(model, cc, x, c, init_loc, init_scale) -> tuple[torch.Tensor, torch.Tensor, list]:
    """q* = N(loc, scale) per row, fitted in blocks of QSTAR_BLOCK rows; returns (loc, scale, fits)."""
    locs, scales, fits = [], [], []
    for sl in _chunks(x.shape[0], QSTAR_BLOCK):
        fit = fit_local(
            model, x[sl], _rows(c, sl), init_loc[sl], init_scale[sl], cc.qstar_lr, cc.qstar_max_steps,
            cc.qstar_window, cc.qstar_tol,
        )  # fmt: skip
        locs.append(fit.loc)
        scales.append(fit.scale)
        fits.append(fit)
    return torch.cat(locs), torch.cat(scales), fits


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def _guide_params(guide, x, c, idx=None, num_data=None) -> tuple[torch.Tensor, torch.Tensor]:
    """q's (loc, scale) for every row, QSTAR_BLOCK rows at a time (the semi-amortized guide refines each block)."""
    locs, scales = [], []
    for sl in _chunks(x.shape[0], QSTAR_BLOCK):
        q = guide_distribution(guide, x[sl], _rows(c, sl), None if idx is None else idx[sl], num_data)
        locs.append(q.base_dist.loc)
        scales.append(q.base_dist.scale)
    return torch.cat(locs), torch.cat(scales)


def _rows(c, sl):
    return None if c is None else c[sl]


@scoped
def evaluate_method(exp, cfg: Config) -> dict:
    """Train ELBO (training rows), test ELBO and test IWAE log p̂(x). A per-datapoint guide has no q for test
    points: its test figures use q* fitted from zero under its decoder (its test-time inference). Estimates run
    ``eval.batch_size`` rows at a time (memory ~ batch x chunk_size x P floats)."""
    ev, cc = cfg.eval, cfg.compare
    n_train = len(exp.data.train)
    result: dict[str, Estimate] = {}
    torch.manual_seed(ev.seed)
    for name, split, on_train in [("train", exp.data.train, True), ("test", exp.data.test, False)]:
        split = split.head(ev.num_points)
        x, c = exp.condition(split.x, split.y)
        idx = torch.arange(len(split), device=x.device)
        if exp.amortized or on_train:
            loc, scale = _guide_params(
                exp.guide, x, c, None if exp.amortized else idx, None if exp.amortized else n_train
            )
        else:
            zeros = torch.zeros(x.shape[0], cfg.model.latent_dim, dtype=x.dtype, device=x.device)
            loc, scale, _ = _qstar(exp.model, cc, x, c, zeros, torch.ones_like(zeros))
        lps, elbos = [], []
        for sl in _chunks(len(split), ev.batch_size):
            q = _normal(loc[sl], scale[sl])
            lp, el = estimates_from_q(exp.model, q, x[sl], _rows(c, sl), ev.num_samples, ev.chunk_size)
            lps.append(lp)
            elbos.append(el)
        result[f"{name}_elbo"] = Estimate(torch.cat(elbos))
        if name == "test":
            result["test_log_px"] = Estimate(torch.cat(lps))
    return result


@scoped
def gap_decomposition(exp, cfg: Config) -> dict:
    """On the amortized run's decoder: L[q], L[q*], log p̂(x) and the gaps for ``compare.gap_points`` training
    points; L[q_K] for the encoder refined K steps (semi-amortized inference at test time).

    log p̂(x) is IWAE with the defensive mixture ½ q* + ½ q as proposal (``DefensiveMixture``): unbiased weights,
    no choice between proposals per datapoint. Estimates run ``eval.batch_size`` points at a time, so peak memory
    is bounded by max(eval.chunk_size, compare.elbo_samples) x eval.batch_size x (P + decoder widths) floats, plus
    the q* fit's block (``QSTAR_BLOCK``), whatever ``gap_points`` is."""
    cc, ev = cfg.compare, cfg.eval
    refine_lr = refinement_lr(cfg)
    split = exp.data.train.head(cc.gap_points)
    x, c = exp.condition(split.x, split.y)
    torch.manual_seed(ev.seed)
    loc, scale = _guide_params(exp.guide, x, c)
    if cc.qstar_init == "zero":
        qs_loc, qs_scale, fits = _qstar(exp.model, cc, x, c, torch.zeros_like(loc), torch.ones_like(scale))
    else:
        qs_loc, qs_scale, fits = _qstar(exp.model, cc, x, c, loc, scale)
    L_q, L_qstar, log_px = [], [], []
    refined: dict[int, list[torch.Tensor]] = {k: [] for k in cc.refine_ks}
    elbo_chunk = min(cc.elbo_samples, ev.chunk_size)
    for sl in _chunks(len(split), ev.batch_size):
        xs, cs = x[sl], _rows(c, sl)
        q_s, qstar_s = _normal(loc[sl], scale[sl]), _normal(qs_loc[sl], qs_scale[sl])
        L_q.append(estimates_from_q(exp.model, q_s, xs, cs, cc.elbo_samples, elbo_chunk)[1])
        L_qstar.append(estimates_from_q(exp.model, qstar_s, xs, cs, cc.elbo_samples, elbo_chunk)[1])
        log_px.append(mixture_log_px(exp.model, qstar_s, q_s, xs, cs, ev.num_samples, ev.chunk_size))
        for k in cc.refine_ks:
            lk, sk = refine(exp.model, xs, cs, loc[sl], scale[sl], k, refine_lr, "none")
            refined[k].append(estimates_from_q(exp.model, _normal(lk, sk), xs, cs, cc.elbo_samples, elbo_chunk)[1])
    L_q, L_qstar, log_px = torch.cat(L_q), torch.cat(L_qstar), torch.cat(log_px)
    refined_est = {k: Estimate(torch.cat(v)) for k, v in refined.items()}
    amort = L_qstar - L_q
    converged = sum(f.converged for f in fits)
    return {
        "L_q": Estimate(L_q),
        "L_qstar": Estimate(L_qstar),
        "log_px": Estimate(log_px),
        "approximation_gap": Estimate(log_px - L_qstar),
        "amortization_gap": Estimate(amort),
        "qstar_steps": max(f.steps for f in fits),
        "qstar_converged": converged == len(fits),
        "refined": refined_est,
        "share_closed": {k: float((v.values - L_q).mean() / amort.mean()) for k, v in refined_est.items()},
        "warnings": gap_warnings(Estimate(L_q), Estimate(L_qstar), len(fits) - converged, len(fits), QSTAR_BLOCK, cc),
    }


def _normal(loc, scale):
    import pyro.distributions as dist

    return dist.Normal(loc.detach(), scale.detach()).to_event(1)


@scoped
def compare(config_path: str | Path, overrides: list[str] | None = None, plugins: list[str] | None = None) -> dict:
    """Train each guide of ``compare.guides`` on the config (one process each: time and peak memory are theirs),
    evaluate them on the same points, decompose the amortized guide's inference gap; print and save the table."""
    config_path = Path(config_path)
    overrides = list(overrides or [])
    plugins = list(plugins or [])
    cfg = config_mod.load(config_path, overrides, plugins=plugins)
    out = Path(cfg.compare.out_dir) if cfg.compare.out_dir else Path("runs") / config_path.stem
    out.mkdir(parents=True, exist_ok=True)
    rows, curves, methods = [], {}, {}
    for guide in cfg.compare.guides:
        print(f"== training guide '{guide}' ({cfg.train.steps} steps)", flush=True)
        usage = _train_subprocess(cfg, guide, out / guide)
        exp, _ = open_run(out / guide)
        history = json.loads((out / guide / "metrics.json").read_text())["history"]
        curves[guide] = history
        print(f"== evaluating guide '{guide}' (K = {cfg.eval.num_samples})", flush=True)
        res = evaluate_method(exp, cfg)
        methods[guide] = exp
        rows.append(
            {
                "guide": guide,
                "train_elbo": res["train_elbo"].mean,
                "train_elbo_se": res["train_elbo"].stderr,
                "test_elbo": res["test_elbo"].mean,
                "test_elbo_se": res["test_elbo"].stderr,
                "test_log_px": res["test_log_px"].mean,
                "test_log_px_se": res["test_log_px"].stderr,
                "train_time_s": history[-1]["time_s"],
                "peak_rss_mb": usage["peak_rss_mb"],
            }
        )
    summary: dict = {"methods": rows, "config": config_mod.to_dict(cfg)}
    if "amortized" in methods:
        print(f"== gap decomposition on the amortized decoder ({cfg.compare.gap_points} training points)", flush=True)
        gaps = gap_decomposition(methods["amortized"], cfg)
        summary["gaps"] = {
            k: (v.as_dict() if isinstance(v, Estimate) else v) for k, v in gaps.items() if k != "refined"
        }
        summary["gaps"]["refined_elbo"] = {str(k): v.as_dict() for k, v in gaps["refined"].items()}
        summary["gaps"]["share_closed"] = {str(k): v for k, v in gaps["share_closed"].items()}
        plots.gap_histogram(gaps["amortization_gap"].values, gaps["approximation_gap"].values, out / "gaps.png")
        plots.share_closed(gaps["share_closed"], out / "semi_amortized_share.png")
    plots.elbo_vs_time(curves, out / "elbo_vs_time.png")
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_comparison(summary, out)
    return summary
