"""Run folders: create one for a config, reopen one (config + checkpoint), write its figures."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pyro_lvm import config as config_mod
from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.evaluation.estimates import guide_distribution, posterior_mean
from pyro_lvm.models.likelihoods import check_targets
from pyro_lvm.runs.files import CHECKPOINT, CONFIG
from pyro_lvm.runs.identity import run_config
from pyro_lvm.studies import plots
from pyro_lvm.training import strategies
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train
from pyro_lvm.training.state import RunState


@scoped
def open_run(
    run_dir: str | Path, overrides: list[str] | None = None, trust_plugins: bool = False
) -> tuple[Experiment, Path]:
    """Rebuild the experiment saved in ``run_dir`` and load its checkpoint (plugins: see ``run_config``)."""
    run_dir = Path(run_dir)
    exp = Experiment.from_config(run_config(run_dir, overrides, trust_plugins))
    RunState.restore(exp, run_dir)
    return exp, run_dir


def check_training_targets(exp: Experiment) -> None:
    """Refuse, before any step, targets the likelihood cannot score (grey data under ``bernoulli``)."""
    target, _ = exp.condition(exp.data.train.x, exp.data.train.y)
    check_targets(getattr(exp.model, "likelihood", None), target)


@scoped
def train_run(
    cfg: Config, run_dir: Path, resume: bool = False, overwrite: bool = False
) -> tuple[Experiment, list[dict]]:
    """Train ``cfg`` in ``run_dir`` (continuing its checkpoint when ``resume``; ``train`` saves the config there),
    then write the figures."""
    exp = Experiment.from_config(cfg)
    check_training_targets(exp)
    history = train(exp, run_dir, resume=resume, validate=True, overwrite=overwrite)
    if strategies.ranks().lead:  # rank 0 writes for a job of several ranks
        figures = write_figures(exp, run_dir, history)
        if exp.cfg.train.mlflow:  # the figures as artifacts of the run's MLflow run
            from pyro_lvm.training.callbacks import mlflow

            mlflow.log_figures(run_dir, figures)
    return exp, history


@torch.no_grad()
@scoped
def write_figures(exp: Experiment, run_dir: Path, history: list[dict]) -> list[Path]:
    """ELBO curves, reconstructions, prior samples and a latent scatter (image data only for the grids)."""
    written = []
    if history:
        plots.elbo_curves(history, run_dir / "elbo_curves.png")
        written.append(run_dir / "elbo_curves.png")
    shape = exp.data.image_shape
    if exp.condition.kind != "none":
        return written  # CVAE figures come from `pyro-lvm sample`
    split = exp.data.test if exp.amortized else exp.data.train
    n = min(len(split), 1000)
    x, y = split.x[:n], split.y[:n]
    idx = None if exp.amortized else torch.arange(n, device=x.device)
    num_data = None if exp.amortized else len(exp.data.train)
    q = guide_distribution(exp.guide, x, None, idx, num_data)
    mean = posterior_mean(q)  # (N, D)
    if shape is not None:
        recon = exp.model.decode_mean(mean[:10])
        plots.image_grid(
            torch.cat([x[:10], recon]),
            shape,
            run_dir / "reconstructions.png",
            title="top: data, bottom: reconstruction (decoder mean at E_q[z])",
        )
        samples = exp.model.generate(None, 100)
        plots.image_grid(samples, shape, run_dir / "samples.png", title="decoder means of z ~ prior")
        written += [run_dir / "reconstructions.png", run_dir / "samples.png"]
        if exp.cfg.train.tensorboard:  # the same grids beside the scalars, at the last step
            from pyro_lvm.training.callbacks import tensorboard

            step = history[-1]["step"] if history else 0
            with tensorboard.writer(run_dir) as tb:
                tensorboard.add_image_grid(tb, "reconstructions", torch.cat([x[:10], recon]), shape, step)
                tensorboard.add_image_grid(tb, "samples", samples, shape, step)
    plots.latent_scatter(mean, y, run_dir / "latent.png", "test" if exp.amortized else "training")
    written.append(run_dir / "latent.png")
    return written


def train_or_reuse(cfg: Config, run_dir: Path) -> None:
    """Train ``cfg`` into ``run_dir``: resume (or keep) a run whose saved config is ``cfg``, else start afresh."""
    saved = run_dir / CONFIG  # its plugins are imported only where they are the study's own (config/trust.py)
    same = saved.is_file() and config_mod.load(saved, saved=True, plugins=cfg.plugins) == cfg
    resume = same and (run_dir / CHECKPOINT).is_file()
    train_run(cfg, run_dir, resume, overwrite=not resume)  # a run of another config: start again


def evaluation(run_dir: Path) -> dict:
    from pyro_lvm.studies.report import evaluate_run  # report opens runs with this module's open_run

    """evaluation.json of the run, recomputed unless it is newer than the checkpoint."""
    path = run_dir / "evaluation.json"
    if path.is_file() and path.stat().st_mtime > (run_dir / CHECKPOINT).stat().st_mtime:
        return json.loads(path.read_text())
    return evaluate_run(run_dir)
