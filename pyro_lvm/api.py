"""The public Python functions (re-exported by ``pyro_lvm``): configs, experiments, training, evaluation,
comparison and sampling from a script or notebook, with or without run folders.

    import pyro_lvm
    cfg = pyro_lvm.load_config("experiments/digits_vae.toml", ["train.steps=500"])
    exp = pyro_lvm.Experiment.from_config(cfg)        # or from_config(cfg, pyro_lvm.from_tensors(x, y))
    history = pyro_lvm.train(exp)                      # nothing written unless run_dir is given
    result = pyro_lvm.evaluate(exp)                    # test ELBO, IWAE log p̂(x), baselines
    images = pyro_lvm.sample(exp, 16)                  # decoder means of z ~ p(z)

Each function runs inside ``pyro_lvm.scope()`` and restores Pyro's settings afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pyro_lvm import config as _config
from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation import analysis
from pyro_lvm.studies import compare as _compare
from pyro_lvm.studies import load as _load
from pyro_lvm.studies import report, run
from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train as _train


def load_config(path: str | Path, overrides: list[str] | None = None, plugins: list[str] | None = None) -> Config:
    """Read a TOML config, import its ``plugins`` (and ``plugins``), apply ``section.key=value`` overrides."""
    return _config.load(path, overrides, plugins)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A config from nested dicts, e.g. ``{"guide": {"name": "per_datapoint"}, "train": {"steps": 500}}``."""
    return _config.from_dict(raw)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A validated copy of ``cfg`` with ``section.key=value`` overrides (switching a component's ``name`` drops
    the old component's options, with a warning naming them)."""
    return _config.with_overrides(cfg, overrides)


@scoped
def train(
    exp: Experiment,
    run_dir: str | Path | None = None,
    resume: bool = False,
    figures: bool = True,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> list[dict]:
    """Train ``exp`` for ``cfg.train.steps`` steps (SVI: minimise −ELBO estimated on batches with the N/B plate
    scale); returns the history rows (``train_elbo``, ``val_elbo``, ...). With ``run_dir``: checkpoints, metrics,
    the resolved config and (``figures``) the figures go there; ``resume=True`` continues its checkpoint and
    ``overwrite=True`` replaces the run it holds. ``callbacks`` (``pyro_lvm.Callback`` subclasses) run beside the
    built-in ones. SIGINT, SIGTERM and SIGUSR1 finish the current step, checkpoint it and raise
    ``pyro_lvm.Interrupted``."""
    run.check_training_targets(exp)
    history = _train(exp, run_dir, resume=resume, validate=True, overwrite=overwrite, callbacks=callbacks)
    if run_dir is not None and figures:
        run.write_figures(exp, Path(run_dir), history)
    return history


@scoped
def evaluate(
    exp: Experiment,
    split: str | None = None,
    num_samples: int | None = None,
    points: int | None = None,
    estimator: str | None = None,
) -> dict:
    """Per datapoint, mean ± standard error: the ELBO and the IWAE bound log p̂(x) = log (1/K) Σ_k p(x, z_k)/q(z_k|x)
    (K = ``num_samples``, default ``cfg.eval.num_samples``) on the first ``points`` rows (default
    ``cfg.eval.num_points``) of ``split`` (default: "test"; "train" for per-datapoint guides, whose q exists only
    for the training rows), the independent-pixel baseline, active units; CVAEs add their checks. ``estimator =
    "ais"`` (default ``cfg.eval.estimator``) adds annealed importance sampling (``ais_log_px``, settings
    ``cfg.eval.ais``) and the BDMC bracket on simulated data (``bdmc``). Same as ``pyro-lvm evaluate [--ais]``."""
    overrides = [f"eval.num_samples={num_samples}"] if num_samples is not None else []
    overrides += [f"eval.estimator={estimator}"] if estimator is not None else []
    overrides += [f"eval.num_points={points}"] if points is not None else []
    if overrides:
        exp = dataclasses.replace(exp, cfg=_config.with_overrides(exp.cfg, overrides))
    return report.evaluate_experiment(exp, split)


@scoped
def sample(
    exp: Experiment,
    num: int,
    label: int | None = None,
    *,
    condition: torch.Tensor | None = None,
    return_: str = "mean",
) -> torch.Tensor:
    """``num`` draws of the prior predictive (label CVAE: given c = ``label``; any CVAE: given ``condition``, its
    c rows (num, C)), seeded by ``cfg.eval.seed``: ``return_ = "mean"`` the decoder means E[x | z] (num, P),
    ``"draws"`` x ~ p(x | z) (num, P) (the model's site ``"x"``), ``"latents"`` z ~ p(z | c) (num, D)."""
    if num < 1:
        raise PyroLVMError(f"num must be at least 1, got {num}")
    if condition is not None:
        if label is not None or exp.condition.kind == "none" or condition.shape[0] != num:
            raise PyroLVMError(
                f"condition= takes a CVAE's c rows, one per draw ({num}); this experiment's condition is "
                f"{exp.condition.kind!r} and condition has shape {tuple(condition.shape)}"
            )
        return analysis.prior_draws(exp, num, condition, return_, exp.cfg.eval.seed)
    c = None
    if exp.condition.kind == "label":
        if label is None:
            raise PyroLVMError(f"this CVAE needs a label (0..{exp.condition.num_classes - 1})")
        y = torch.full((num,), int(label), dtype=torch.long, device=exp.device)
        c = exp.condition.labels(y, exp.data.train.x.dtype)
    elif label is not None or exp.condition.kind != "none":
        raise PyroLVMError(
            f"sample(label=...) is for label CVAEs; this experiment's condition is {exp.condition.kind!r}"
        )
    return analysis.prior_draws(exp, num, c, return_, exp.cfg.eval.seed)


def load(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    device: str | None = None,
    overrides: list[str] | None = None,
    trust_plugins: bool = False,
) -> Experiment:
    """The experiment of a run folder with its checkpoint's parameters, read-only: no file is written, the folder's
    lock (where a train created one) is held shared while reading, and torch's random state and Pyro's settings are
    left as they were. Its ``history``, ``step`` and ``run_dir`` say what the run recorded. A relative data file
    saved in the config is looked up from here, then above the run folder. ``device``: e.g. "cpu" for a GPU run.
    Plugin modules the run names are imported only when importable from elsewhere than the run's surroundings and
    the current folder, already imported, or with ``trust_plugins=True`` (opening a run runs none of its code
    unasked)."""
    return _load.load_run(
        run_dir, checkpoint=checkpoint, device=device, overrides=overrides, trust_plugins=trust_plugins
    )


@scoped
def compare(config_path: str | Path, overrides: list[str] | None = None, plugins: list[str] | None = None) -> dict:
    """``pyro-lvm compare``: train every guide of ``compare.guides`` on the config, evaluate them on the same
    points, decompose the amortized guide's gap; tables and figures go to ``compare.out_dir``."""
    return _compare.compare(config_path, overrides, plugins)


__all__ = ["compare", "config_from_dict", "evaluate", "load", "load_config", "sample", "train", "with_overrides"]
