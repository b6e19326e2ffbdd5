"""Open a run folder read-only: the experiment its config describes, with its checkpoint's parameters.

Nothing is written (not even a lock file: the folder's lock is held shared only where a train created one), and the
caller's torch random state and Pyro settings are as they were afterwards. A relative data file saved in the
config is looked up from the working directory, then from each folder above the run folder (where the run was most
likely trained from), so a run folder opens from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.data import load_dataset
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.lock import read_lock
from pyro_lvm.seeding import cuda_devices
from pyro_lvm.studies.run import run_config
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.state import RunState

DATA_FILES = ("path", "labels", "root")  # data options that name files or folders


@dataclass
class LoadedExperiment(Experiment):
    """An ``Experiment`` opened from a run folder, with where it came from and what it recorded."""

    run_dir: Path | None = None
    step: int = 0  # the checkpoint's training step
    history: list[dict] = field(default_factory=list)  # its metrics rows (train_elbo, val_elbo, ...)
    summary: dict = field(default_factory=dict)


def _found_data(cfg: Config, run_dir: Path) -> Config:
    """``cfg`` with each relative data file that is not found from here replaced by the one above ``run_dir``."""
    update = {}
    for key in DATA_FILES:
        value = getattr(cfg.data, key, None)
        if not isinstance(value, str) or Path(value).expanduser().is_absolute() or Path(value).exists():
            continue
        found = next((base / value for base in run_dir.resolve().parents if (base / value).exists()), None)
        if found is not None:
            update[key] = str(found)
        elif key != "root":  # a dataset's root may be filled by a download; a named file must exist
            raise PyroLVMError(
                f"data.{key} = {value!r} (saved in {str(run_dir / 'config.toml')!r}) is found neither from here nor "
                f"above the run folder; copy the file there or load with overrides=['data.{key}=/its/path']"
            )
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=update)}) if update else cfg


@scoped
def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "last",
    device: str | None = None,
    overrides: list[str] | None = None,
    trust_plugins: bool = False,
) -> LoadedExperiment:
    """The experiment saved in ``run_dir`` with its checkpoint's parameters, read-only (module docstring).
    ``device`` moves it (default: the run's ``train.device``); ``overrides`` are ``--set``-style changes that do not
    make it another run (e.g. ``eval.num_samples``). The run's plugin modules are imported as ``evaluate`` imports
    them (``config.trust``: given here, installed elsewhere, or ``trust_plugins=True``)."""
    run_dir = Path(run_dir)
    if checkpoint != "last":
        raise PyroLVMError(f"checkpoint {checkpoint!r}: a run folder keeps its last checkpoint only; use 'last'")
    cfg = run_config(run_dir, [*(overrides or []), *([f"train.device={device!r}"] if device else [])], trust_plugins)
    with read_lock(run_dir, create=False, doing="load it"), torch.random.fork_rng(devices=cuda_devices()):
        data = load_dataset(_found_data(cfg, run_dir).data)
        exp = Experiment.from_config(cfg, data)  # the saved paths stay in cfg: the checkpoint's identity has them
        state = RunState.restore(exp, run_dir, rng=False)  # the caller's random streams stay theirs
    fields = {name: getattr(exp, name) for name in exp.__dataclass_fields__}
    return LoadedExperiment(**fields, run_dir=run_dir, step=state.step, history=state.history, summary=state.summary)
