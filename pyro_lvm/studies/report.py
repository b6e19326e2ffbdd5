"""What ``pyro-lvm evaluate`` and ``pyro-lvm sample`` compute for a run folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tabulate import tabulate

from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import Estimate, active_units, evaluate_split, independent_baseline
from pyro_lvm.runs.files import atomic_file
from pyro_lvm.runs.lock import read_lock
from pyro_lvm.seeding import seeded
from pyro_lvm.studies import plots
from pyro_lvm.studies.run import open_run
from pyro_lvm.training import strategies


@scoped
def evaluate_run(run_dir: str | Path, overrides: list[str] | None = None, trust_plugins: bool = False) -> dict:
    """``evaluate_experiment`` on the run saved in ``run_dir``, written to its evaluation.json (``trust_plugins``:
    import every plugin module its config names, see ``config.trust``)."""
    with read_lock(Path(run_dir)):  # no train may replace the checkpoint or clear the folder meanwhile
        exp, run_dir = open_run(run_dir, overrides, trust_plugins)
        link = None
        if strategies.ranks().lead and exp.cfg.train.mlflow:  # the run's MLflow run, opened before the estimates
            from pyro_lvm.training.callbacks import mlflow

            link = mlflow.Link.of(run_dir)  # None where the run records none (RUN/mlflow.json)
        out = evaluate_experiment(exp)
        if strategies.ranks().lead:  # a job of several ranks: rank 0 writes
            if "accuracy" in out:  # M2: its figures beside evaluation.json
                from pyro_lvm.studies.label_report import m2_figures

                m2_figures(exp, out, run_dir)
            with atomic_file(run_dir / "evaluation.json") as f:  # never half a file (checkpoint.py)
                f.write(json.dumps(out, indent=2))
            if link is not None:
                mlflow.log_evaluation(link, run_dir, out, run_dir / "evaluation.json")
    return out


@scoped
def evaluate_experiment(exp, split: str | None = None) -> dict:
    """Test-set ELBO and IWAE log p̂(x) (K = eval.num_samples) with standard errors, the independent-pixel
    baseline on the same points, and active units. Per-datapoint guides have no q for unseen points, so they are
    evaluated on the training rows they hold (say so in the output). ``split`` names another split. With
    ``eval.estimator = "ais"`` also AIS log p̂(x) on the same points and the BDMC bracket on simulated data
    (``pyro_lvm.evaluation.ais.ais_evaluation``); ``log_px`` stays the IWAE figure."""
    if exp.cfg.eval.estimator == "ais" and strategies.ranks().size > 1:
        raise PyroLVMError("eval.estimator = 'ais' runs in one process; drop --nproc (or use eval.estimator = 'iwae')")
    default = "test" if exp.amortized else "train"
    if split not in (None, "train", "val", "test"):
        raise PyroLVMError(f"split {split!r} is not one of 'train', 'val', 'test'")
    if split not in (None, default) and (not exp.amortized or exp.recipe.name == "semi_supervised"):
        raise PyroLVMError(
            f"this experiment is evaluated on its {default!r} split only (a per_datapoint guide holds q for the "
            f"training rows; M2 sums the label out on the test split); drop split={split!r}"
        )
    if exp.recipe.name == "semi_supervised":  # M2: the label is summed out (studies/label_report.py)
        from pyro_lvm.studies.label_report import evaluate_m2

        return evaluate_m2(exp)
    ev = exp.cfg.eval
    split_name = split or default
    split = getattr(exp.data, split_name)
    result = evaluate_split(
        exp.model,
        exp.guide,
        split,
        exp.condition,
        ev.num_samples,
        ev.chunk_size,
        ev.batch_size,
        ev.num_points,
        None if exp.amortized else len(exp.data.train),
        ev.seed,
        per_batch_streams=ev.per_batch_streams,
        ranks=strategies.ranks(),
    )
    n = result["log_px"].values.numel()
    points = split.head(n)
    target, _ = exp.condition(points.x, points.y)
    train_target, _ = exp.condition(exp.data.train.x, exp.data.train.y)
    levels = getattr(exp.model.likelihood, "levels", None)  # 8-bit data under a discretized likelihood
    baseline = independent_baseline(train_target, target, exp.data.binary, levels)
    out = {
        "split": split_name,
        "num_points": n,
        "num_samples": ev.num_samples,
        "elbo": result["elbo"].as_dict(),
        "log_px": result["log_px"].as_dict(),
        "baseline_log_px": baseline.as_dict(),
        "active_units": active_units(exp.guide, split, exp.condition) if exp.amortized else None,
        "latent_dim": getattr(exp.model, "latent_dim", exp.cfg.model.latent_dim),
    }
    if ev.estimator == "ais":
        from pyro_lvm.evaluation.ais import ais_evaluation

        num_data = None if exp.amortized else len(exp.data.train)
        out.update(ais_evaluation(exp.model, exp.guide, split, exp.condition, ev, num_data, exp.amortized))
    if levels is not None:  # bits/dim = −log p(x) / (P ln 2), the unit of the image-density literature
        out["bits_per_dim"] = Estimate(-result["log_px"].values / (target.shape[-1] * math.log(2))).as_dict()
    if exp.condition.kind != "none":
        from pyro_lvm.evaluation.cvae_checks import label_cvae_report, prior_estimate

        out["condition"] = exp.condition.kind
        out["prior_mc_log_px"] = prior_estimate(
            exp.model, split, exp.condition, ev.num_samples, ev.chunk_size, ev.batch_size, ev.num_points, ev.seed
        ).as_dict()
        if exp.condition.kind == "label":
            out.update(label_cvae_report(exp, seed=ev.seed))
    if exp.model.baseline is not None:
        from pyro_lvm.models.baseline import split_log_prob

        nn_values = split_log_prob(exp.model.baseline, points, exp.condition)  # (n,), exact
        out["nn_baseline_log_px"] = Estimate(nn_values).as_dict()
        # paired over the same points: far smaller error than the two standard errors would suggest
        out["iwae_minus_nn_baseline"] = Estimate(result["log_px"].values - nn_values).as_dict()
    return out


def print_evaluation(result: dict) -> None:
    if "accuracy" in result:
        from pyro_lvm.studies.label_report import print_m2

        return print_m2(result)

    def row(label: str, key: str) -> list:
        return [label, result[key]["mean"], result[key]["stderr"]]

    num = result["num_samples"]
    rows = [row(f"ELBO (K={num} average)", "elbo"), row(f"IWAE log p̂(x), K={num}", "log_px")]
    if "prior_mc_log_px" in result:
        rows[1][0] = f"IWAE log p̂(x|c) with q(z|x,c), K={num}"
        rows.append(row(f"prior MC log p̂(x|c), z ~ p(z|c), K={num}", "prior_mc_log_px"))
    if "ais_log_px" in result:
        a = result["ais"]
        rows.append(row(f"AIS log p̂(x), {a['chains']} chains x {a['steps']} steps ({a['start']} start)", "ais_log_px"))
    rows.append(row("independent-pixel baseline log p(x)", "baseline_log_px"))
    if "bits_per_dim" in result:
        rows.append(row("bits/dim from IWAE log p̂(x)", "bits_per_dim"))
    if "nn_baseline_log_px" in result:
        rows.append(row("NN baseline log p(x|c) (deterministic, exact)", "nn_baseline_log_px"))
        rows.append(row("IWAE minus NN baseline (paired)", "iwae_minus_nn_baseline"))
    print(f"{result['split']} split, {result['num_points']} points, nats per datapoint:")
    print(tabulate(rows, headers=["estimate", "mean", "std. error"], floatfmt=".3f"))
    if "ais" in result:
        print(f"AIS: mean HMC acceptance {result['ais']['acceptance']:.2f} ({result['ais']['schedule']} schedule)")
    if "bdmc" in result:
        b = result["bdmc"]
        print(
            f"BDMC on {b['gap']['n']} points simulated from the model ({b['start']} start): log p(x) between "
            f"{b['lower']['mean']:.3f} ± {b['lower']['stderr']:.3f} (AIS) and {b['upper']['mean']:.3f} ± "
            f"{b['upper']['stderr']:.3f} (reverse AIS); gap {b['gap']['mean']:.3f} ± {b['gap']['stderr']:.3f} nats"
        )
    if result["active_units"] is not None:
        print(f"active units: {result['active_units']} of {result['latent_dim']}")
    if "generation_accuracy" in result:
        acc = " ".join(f"{k}:{100 * a:.0f}%" for k, a in enumerate(result["generation_accuracy"]))
        print(f"samples of p(z|c=k) labelled k by a logistic regression: {acc}")
        print(
            f"  (lowest {100 * result['min_generation_accuracy']:.0f}%; the classifier labels real test images "
            f"{100 * result['classifier_test_accuracy']:.0f}% right)"
        )
        print(f"mean pairwise KL between class priors p(z|c): {result['mean_pairwise_prior_kl']:.2f} nats")


@scoped
def sample_run(
    run_dir: str | Path,
    condition: str | None,
    num: int,
    overrides: list[str] | None = None,
    rows: int = 8,
    completions: int = 6,
    trust_plugins: bool = False,
) -> Path:
    """A PNG grid of decoder means under the prior; for label CVAEs, p(z | c = condition); for quadrant CVAEs, a
    completion grid of the first ``rows`` test images (observed part, truth, NN baseline, ``completions``
    draws of z ~ p(z | c)). ``trust_plugins``: as for ``evaluate_run``."""
    with read_lock(Path(run_dir)):
        return _sample_run(run_dir, condition, num, overrides, rows, completions, trust_plugins)


def _sample_run(run_dir, condition, num, overrides, rows, completions, trust_plugins) -> Path:
    exp, run_dir = open_run(run_dir, overrides, trust_plugins)
    c, name = _sample_condition(exp, condition, num)
    if exp.condition.kind == "quadrants":
        return _completion_grid(exp, run_dir, rows, completions)
    images = prior_samples(exp, num, c)
    plots.image_grid(
        images,
        exp.data.image_shape,
        run_dir / name,
        title=f"decoder means, z ~ p(z{' | c=' + condition if c is not None else ''})",
    )
    return run_dir / name


def prior_samples(exp, num: int, c: torch.Tensor | None = None) -> torch.Tensor:
    """Decoder means E[x | z] of ``num`` draws z ~ p(z | c), seeded by ``eval.seed``: (num, P)."""
    with torch.no_grad(), seeded(exp.cfg.eval.seed):
        return exp.model.generate(c, num)


def _sample_condition(exp, condition: str | None, num: int) -> tuple[torch.Tensor | None, str]:
    if exp.data.image_shape is None:
        raise PyroLVMError(f"dataset {exp.cfg.data.name!r} is not images; nothing to draw")
    if exp.condition.kind == "quadrants":
        if condition is not None:
            raise PyroLVMError("--condition applies to label CVAEs; a quadrant CVAE completes test images")
        return None, "completions.png"
    c = None
    if exp.condition.kind == "label":
        if condition is None:
            raise PyroLVMError(f"this CVAE needs --condition LABEL (0..{exp.condition.num_classes - 1})")
        try:
            label = int(condition)
        except ValueError:
            raise PyroLVMError(f"--condition must be an integer label, got {condition!r}") from None
        y = torch.full((num,), label, dtype=torch.long, device=exp.device)
        c = exp.condition.labels(y, exp.data.train.x.dtype)
    elif condition is not None:
        raise PyroLVMError("--condition applies to label CVAEs only; this run has no label condition")
    return c, (f"samples_c{condition}.png" if c is not None else "samples.png")


def _completion_grid(exp, run_dir: Path, rows: int, completions: int) -> Path:
    from pyro_lvm.evaluation.completion import completion_images

    if rows < 1 or completions < 1:
        raise PyroLVMError(f"--rows and --completions must be at least 1, got {rows} and {completions}")
    with seeded(exp.cfg.eval.seed):
        images = completion_images(exp.model, exp.condition, exp.data.test, rows, completions)
    path = run_dir / "completions.png"
    plots.image_grid(
        images,
        exp.data.image_shape,
        path,
        nrow=3 + completions,
        title=f"observed ({exp.cfg.model.observed_quadrants} quadrant(s); hidden = grey), truth, NN baseline,\n"
        f"then {completions} CVAE completions (decoder means of z ~ p(z|c))",
        pad_value=1.0,
    )
    return path
