"""``pyro-lvm compare``: amortized vs per-datapoint vs semi-amortized (vs amortized-flow) inference on the same
data, decoder architecture and budget, and the Cremer et al. (2018) gap decomposition (``gaps.py``) on the decoder
trained with the Gaussian encoder and, where ``amortized_flow`` is compared, on the one trained with the flow.

Each method trains in its own subprocess (``pyro-lvm train``), so its peak RSS is its own (``os.wait4``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from pyro_lvm import config as config_mod
from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.errors import Interrupted, PyroLVMError
from pyro_lvm.evaluation.estimates import Estimate, active_units, estimates_from_q
from pyro_lvm.registry import MODELS
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.studies import plots
from pyro_lvm.studies.compare_report import print_comparison
from pyro_lvm.studies.gaps import check_memory, chunks, fit_qstar, gap_decomposition, guide_rows, normal, rows
from pyro_lvm.studies.run import open_run
from pyro_lvm.training.callbacks.signals import SIGNALS
from pyro_lvm.training.experiment import Experiment


def guide_config(cfg: Config, guide: str, run_dir: Path) -> Config:
    """The config one guide of the comparison trains with: [guide]'s options that this guide has, then its
    ``compare.guide_options``; every other section as given."""
    raw = config_mod.to_dict(cfg)
    foreign = {"name", *config_mod.foreign_options("guide", raw["guide"], guide)}
    own = {k: v for k, v in raw["guide"].items() if k not in foreign}
    raw["guide"] = {**own, **cfg.compare.guide_options.get(guide, {}), "name": guide}
    raw["train"]["out_dir"] = str(run_dir)
    return config_mod.from_dict(raw)


@contextlib.contextmanager
def _forwarding_signals(proc: subprocess.Popen):
    """While ``proc`` trains, SIGINT / SIGTERM / SIGUSR1 sent to this process are passed on to it (it finishes its
    step and checkpoints); the handlers are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, _: proc.send_signal(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _train_subprocess(cfg: Config, guide: str, run_dir: Path) -> dict:
    config_file = run_dir.parent / f"{guide}.toml"  # beside the run folder, which --overwrite replaces
    config_mod.save(guide_config(cfg, guide, run_dir), config_file)
    cmd = [sys.executable, "-m", "pyro_lvm.cli", "train", str(config_file), "--overwrite"]
    start = time.perf_counter()
    # stdout (the per-run table) is dropped: compare prints its own; stderr (progress, errors) reaches the user.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    with _forwarding_signals(proc):  # a signal to compare stops the training run cleanly, not orphaned
        _, status, usage = os.wait4(proc.pid, 0)  # wait4, not wait: it returns this child's own peak RSS
    code = os.waitstatus_to_exitcode(status)
    if code - 128 in SIGNALS:  # the run stopped at the end of a step with a checkpoint (training/callbacks/signals.py)
        name = signal.Signals(code - 128).name
        if not (run_dir / CHECKPOINT).exists():  # stopped before its first step (data, baseline): nothing to keep
            raise Interrupted(f"stopped by {name} while preparing the {guide} guide's run (nothing saved)", code - 128)
        raise Interrupted(
            f"stopped by {name} while training the {guide} guide (its run folder {str(run_dir)!r} holds a checkpoint at the step it stopped)",
            code - 128,
        )
    if code != 0:
        raise PyroLVMError(f"training the {guide} guide failed (exit {code}); see the message above")
    return {"process_wall_s": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024}


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
            q_rows = guide_rows(exp.guide, x, c, None if exp.amortized else idx, None if exp.amortized else n_train)
        else:
            zeros = torch.zeros(x.shape[0], cfg.model.latent_dim, dtype=x.dtype, device=x.device)
            loc, scale, _ = fit_qstar(exp.model, cc, x, c, zeros, torch.ones_like(zeros))
            q_rows = lambda sl, loc=loc, scale=scale: normal(loc[sl], scale[sl])  # noqa: E731
        lps, elbos = [], []
        for sl in chunks(len(split), ev.batch_size):
            lp, el = estimates_from_q(exp.model, q_rows(sl), x[sl], rows(c, sl), ev.num_samples, ev.chunk_size)
            lps.append(lp)
            elbos.append(el)
        result[f"{name}_elbo"] = Estimate(torch.cat(elbos))
        if name == "test":
            result["test_log_px"] = Estimate(torch.cat(lps))
    return result


def _active_units(exp, cfg) -> int:
    """Active units on the test points (per-datapoint guides: on the training rows they hold)."""
    if exp.amortized:
        return active_units(exp.guide, exp.data.test.head(cfg.eval.num_points), exp.condition)
    return active_units(
        exp.guide, exp.data.train.head(cfg.eval.num_points), exp.condition, num_data=len(exp.data.train)
    )


@scoped
def compare(config_path: str | Path, overrides: list[str] | None = None, plugins: list[str] | None = None) -> dict:
    """Train each guide of ``compare.guides`` on the config (one process each: time and peak memory are theirs),
    evaluate them on the same points, decompose the amortized guide's inference gap; print and save the table."""
    config_path = Path(config_path)
    overrides = list(overrides or [])
    plugins = list(plugins or [])
    cfg = config_mod.load(config_path, overrides, plugins=plugins)
    if MODELS.trait(cfg.model.name, "recipe") == "semi_supervised":
        raise PyroLVMError(
            "compare swaps the guide of one model; model 'm2' has one guide (its classifier and encoder): evaluate it "
            "with pyro-lvm evaluate, and its label efficiency with experiments/semi_supervised.py"
        )
    probe = Experiment.from_config(cfg)  # refuses what training cannot hold; its decoder sizes compare's estimates
    check_memory(cfg, probe.model, probe.data.train.x)
    del probe
    out = Path(cfg.compare.out_dir) if cfg.compare.out_dir else Path("runs") / config_path.stem
    out.mkdir(parents=True, exist_ok=True)
    rows, curves, methods = [], {}, {}
    for guide in cfg.compare.guides:
        print(f"== training guide '{guide}' ({cfg.train.steps} steps)", flush=True)
        try:
            usage = _train_subprocess(cfg, guide, out / guide)
        except Interrupted as stop:
            finished = ", ".join(methods) or "none"
            raise Interrupted(
                f"{stop}; guides finished: {finished}; compare starts again when rerun", stop.signum
            ) from None
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
                "active_units": _active_units(exp, cfg),
                "train_time_s": history[-1]["time_s"],
                "peak_rss_mb": usage["peak_rss_mb"],
            }
        )
    summary: dict = {"methods": rows, "config": config_mod.to_dict(cfg)}
    for decoder, key, figure in [("amortized", "gaps", "gaps.png"), ("amortized_flow", "gaps_flow", "gaps_flow.png")]:
        if decoder not in methods:
            continue
        points = cfg.compare.gap_points
        print(f"== gap decomposition on the {decoder} decoder ({points} training points)", flush=True)
        gaps = gap_decomposition(methods[decoder], cfg)
        summary[key] = {k: (v.as_dict() if isinstance(v, Estimate) else v) for k, v in gaps.items() if k != "refined"}
        summary[key]["refined_elbo"] = {str(k): v.as_dict() for k, v in gaps["refined"].items()}
        summary[key]["share_closed"] = {str(k): v for k, v in gaps["share_closed"].items()}
        summary[key]["per_datapoint"] = {  # the histograms' values, for a reader's own plots and tests
            k: v.values.tolist() for k, v in gaps.items() if isinstance(v, Estimate)
        }
        plots.gap_histogram(gaps["amortization_gap"].values, gaps["approximation_gap"].values, out / figure)
        if gaps["share_closed"]:
            plots.share_closed(gaps["share_closed"], out / "semi_amortized_share.png")
    plots.elbo_vs_time(curves, out / "elbo_vs_time.png")
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    with open(out / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_comparison(summary, out)
    return summary
