"""Label-efficiency study: test accuracy against the number of labels for M2 with and without the auxiliary
classification term, and for the same classifier network trained on the labelled rows alone.

Every method sees the same labelled rows in each draw (``data.label_seed`` = draw); the table reports the mean
over draws and a 95% confidence interval from Student's t with (draws − 1) degrees of freedom.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from scipy import stats
from tabulate import tabulate

from pyro_lvm import config as config_mod
from pyro_lvm.context import scoped
from pyro_lvm.evaluation.labels import label_probs
from pyro_lvm.registry import NETWORKS
from pyro_lvm.seeding import seeded
from pyro_lvm.studies import plots
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

METHODS = ("M2 + aux", "M2", "labels only")


def fit_classifier(x, y, num_classes: int, hidden: list[int], steps: int, lr: float, seed: int):
    """The M2 guide's classifier architecture (an MLP x -> K logits) fitted by Adam on cross-entropy over the
    labelled rows (full batch), for ``steps`` steps: the supervised baseline."""
    with seeded(seed):
        net = NETWORKS.build("mlp", n_in=x.shape[1], n_out=num_classes, hidden=list(hidden)).to(x.dtype)
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optim.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optim.step()
    return net


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t interval); half-width NaN for a single draw."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


@scoped
def one_draw(cfg, count: int, draw: int, aux_weight: float, baseline_steps: int) -> dict:
    """Accuracies of the three methods for one draw of ``count`` labels; M2 runs train in memory."""
    out = {}
    for method, alpha in (("M2 + aux", aux_weight), ("M2", 0.0)):
        run = config_mod.with_overrides(
            cfg,
            [f"data.labelled={count}", f"data.label_seed={draw}", f"model.aux_weight={alpha}", "train.progress=false"],
        )
        exp = Experiment.from_config(run)
        t0 = time.perf_counter()
        train(exp)
        with torch.no_grad():
            out[method] = accuracy(label_probs(exp.guide, exp.data.test.x), exp.data.test.y)
        out[f"{method} time_s"] = time.perf_counter() - t0
    rows = exp.data.labelled
    x, y = exp.data.train.x[rows], exp.data.train.y[rows]
    net = fit_classifier(x, y, exp.data.num_classes, cfg.guide.classifier_hidden, baseline_steps, cfg.optim.lr, draw)
    with torch.no_grad():
        out["labels only"] = accuracy(net(exp.data.test.x), exp.data.test.y)
    return out


def label_study(cfg, counts: list[int], draws: int, aux_weight: float, baseline_steps: int, out_dir: Path) -> dict:
    """Every (count, draw); writes label_study.json and label_study.png into ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {c: [one_draw(cfg, c, d, aux_weight, baseline_steps) for d in range(draws)] for c in counts}
    summary = {str(c): {m: confidence_interval([r[m] for r in runs[c]]) for m in METHODS} for c in counts}
    result = {"counts": counts, "draws": draws, "aux_weight": aux_weight, "summary": summary, "runs": runs}
    (out_dir / "label_study.json").write_text(json.dumps(result, indent=2))
    fig, ax = plots.subplots(figsize=(6, 4))
    for m in METHODS:
        means = [summary[str(c)][m][0] * 100 for c in counts]
        errors = [summary[str(c)][m][1] * 100 for c in counts]
        ax.errorbar(counts, means, yerr=errors, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    plots._finish(fig, ax, out_dir / "label_study.png", "labelled training rows", "test accuracy (%), 95% CI")
    return result


def print_label_study(result: dict) -> None:
    rows = []
    for c in result["counts"]:
        s = result["summary"][str(c)]
        rows.append([c, *(f"{100 * s[m][0]:.1f} ± {100 * s[m][1]:.1f}" for m in METHODS)])
    print(f"test accuracy (%), mean ± 95% CI half-width over {result['draws']} label draws:")
    print(tabulate(rows, headers=["labels", *METHODS]))
