"""The CVAE studies of experiments/cvae_study.py: one config, several variants, one table.

- ``quadrant_study``: for 1, 2, 3 observed quadrants, the NN baseline's exact −log p(x|c) against the CVAE's
  importance-sampled −log p̂(x|c) (and −ELBO, an upper bound) with each prior variant, on the same test points,
  with the paired difference and its standard error. Every run also writes its completion grid.
- ``label_study``: label-conditioned generation with each prior: per-class generation accuracy, pairwise KL
  between class priors, ELBO and −log p̂(x|c).

Runs live in ``OUT/<variant>`` folders; a run whose saved config matches is resumed (or reused when finished), and
its evaluation is reused while evaluation.json is newer than the checkpoint. Delete a folder to redo it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tabulate import tabulate

from pyro_lvm import config as config_mod
from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.studies.report import sample_run
from pyro_lvm.studies.run import evaluation, train_or_reuse

LABEL_VARIANTS = {
    "standard_normal": ["prior.name=standard_normal"],
    "conditional": ["prior.name=conditional"],
    "mog": ["prior.name=mog"],
    "mog_per_class": ["prior.name=mog", "prior.per_class=true"],
}
QUADRANT_VARIANTS = {
    "standard_normal": ["prior.name=standard_normal"],
    "conditional": ["prior.name=conditional"],
    "conditional_fed": ["prior.name=conditional", "baseline.feed_prior=true"],
}


def _run(base: Config, run_dir: Path, overrides: list[str]) -> dict:
    cfg = config_mod.with_overrides(base, [*overrides, f"train.out_dir={run_dir}"])
    train_or_reuse(cfg, run_dir)
    return evaluation(run_dir)


def _pm(d: dict, sign: float = 1.0) -> str:
    return f"{sign * d['mean']:.2f} ± {d['stderr']:.2f}"


@scoped
def quadrant_study(
    config_path: str | Path,
    overrides: list[str],
    out: Path,
    quadrants: list[int],
    variants: list[str],
) -> list[dict]:
    """Train and evaluate every (observed quadrants, variant); write ``out``/quadrants.{md,json}."""
    base = config_mod.load(config_path, overrides)
    rows = []
    for q in quadrants:
        for name in variants:
            run_dir = out / f"q{q}_{name}"
            result = _run(base, run_dir, [f"model.observed_quadrants={q}", *QUADRANT_VARIANTS[name]])
            sample_run(run_dir, None, 0)
            rows.append({"observed_quadrants": q, "variant": name, "run_dir": str(run_dir), **result})
    table = [
        [
            r["observed_quadrants"],
            r["variant"],
            _pm(r["nn_baseline_log_px"], -1),
            _pm(r["log_px"], -1),
            _pm(r["elbo"], -1),
            _pm(r["prior_mc_log_px"], -1),
            _pm(r["iwae_minus_nn_baseline"]),
        ]
        for r in rows
    ]
    headers = [
        "observed",
        "CVAE prior",
        "NN baseline −log p(x|c)",
        "CVAE −log p̂(x|c) (IWAE)",
        "CVAE −ELBO (bound)",
        "CVAE −log p̂ (prior MC)",
        "CVAE gain over NN (paired)",
    ]
    n, k = rows[0]["num_points"], rows[0]["num_samples"]
    note = f"nats per test image, {n} test points, K = {k}; mean ± standard error (lower −log p is better)"
    _report(out / "quadrants", table, headers, note, rows)
    return rows


@scoped
def label_study(config_path: str | Path, overrides: list[str], out: Path, variants: list[str]) -> list[dict]:
    """Train and evaluate a label CVAE per prior variant; write ``out``/labels.{md,json} and a sample grid per
    class."""
    base = config_mod.load(config_path, overrides)
    rows = []
    for prior in variants:
        run_dir = out / prior
        result = _run(base, run_dir, LABEL_VARIANTS[prior])
        for label in range(len(result["generation_accuracy"])):
            sample_run(run_dir, str(label), 20)
        rows.append({"prior": prior, "run_dir": str(run_dir), **result})
    table = [
        [
            r["prior"],
            _pm(r["elbo"]),
            _pm(r["log_px"]),
            f"{r['mean_pairwise_prior_kl']:.2f}",
            f"{100 * r['min_generation_accuracy']:.0f}%",
            " ".join(f"{100 * a:.0f}" for a in r["generation_accuracy"]),
        ]
        for r in rows
    ]
    headers = ["prior", "ELBO", "log p̂(x|c) (IWAE)", "pairwise KL", "min acc.", "accuracy per class (%)"]
    r0 = rows[0]
    note = (
        f"nats per test image, {r0['num_points']} points, K = {r0['num_samples']}; accuracy = share of 100 decoder "
        f"means of z ~ p(z|c=k) that a logistic regression (test accuracy "
        f"{100 * r0['classifier_test_accuracy']:.0f}% on real images) labels k"
    )
    _report(out / "labels", table, headers, note, rows)
    return rows


def _report(stem: Path, table: list, headers: list[str], note: str, rows: list[dict]) -> None:
    """A study's table as GitHub Markdown with its note: printed, and written to STEM.md beside STEM.json."""
    text = tabulate(table, headers=[h.replace("|", "\\|") for h in headers], tablefmt="github")  # "x|c" in a cell
    stem.with_suffix(".md").write_text(f"{text}\n\n{note}\n")
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"{text}\n\n{note}")
