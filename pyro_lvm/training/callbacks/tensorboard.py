"""TensorBoard logging of a training run (``train.tensorboard = true``): one scalar per metrics row and key, image
grids at the end. Writes to ``RUN/tb/``; view with ``tensorboard --logdir RUN/tb``. The ``tensorboard`` package is
an optional extra (``pip install 'pyro-lvm[tensorboard]'``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.callbacks.base import Callback

SCALARS = {  # metrics row key -> TensorBoard tag
    "train_elbo": "train/elbo",
    "train_objective": "train/objective",
    "beta": "train/beta",
    "val_elbo": "val/elbo",
}


def require(run_dir: Path | str | None):
    """``SummaryWriter``, or one line where the package or a run folder is missing (checked before anything is
    written)."""
    if run_dir is None:
        raise PyroLVMError("train.tensorboard = true writes to RUN/tb: give train a run folder (run_dir)")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PyroLVMError(
            "train.tensorboard = true needs the tensorboard package: pip install 'pyro-lvm[tensorboard]' "
            "(or pip install tensorboard), or set train.tensorboard = false"
        ) from None
    return SummaryWriter


def writer(run_dir: Path | str | None, purge_step: int | None = None):
    """A ``SummaryWriter`` on ``run_dir/tb``; ``purge_step`` (a resume) drops events logged after the checkpoint by
    the run that stopped."""
    return require(run_dir)(str(Path(run_dir) / "tb"), purge_step=purge_step)


class ScalarLog:
    """Adds each metrics row's values at its step, and the mean step time since the previous row, to RUN/tb; with
    ``run_dir = None`` (tensorboard off) it does nothing. A resume purges the events that the stopped run logged
    after its checkpoint's step."""

    def __init__(self, run_dir: Path | None, step: int = 0, elapsed: float = 0.0, resume: bool = False) -> None:
        self.tb = None if run_dir is None else writer(run_dir, purge_step=step + 1 if resume else None)
        self.last_step, self.last_time = step, elapsed

    def add(self, row: dict) -> None:
        if self.tb is None:
            return
        for key, tag in SCALARS.items():
            if key in row:
                self.tb.add_scalar(tag, row[key], row["step"])
        steps = row["step"] - self.last_step
        if steps > 0:
            self.tb.add_scalar("time/step_ms", 1e3 * (row["time_s"] - self.last_time) / steps, row["step"])
        self.last_step, self.last_time = row["step"], row["time_s"]
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TensorBoard(Callback):
    """The rows' scalars in RUN/tb, written by the lead rank."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir, self.log = run_dir, None

    def on_fit_start(self, fit) -> None:
        out = self.run_dir if fit.strategy.is_lead else None
        self.log = ScalarLog(out, fit.state.step, fit.state.elapsed, fit.state.resumed)

    def on_row(self, fit, row: dict) -> None:
        self.log.add(row)

    def on_fit_end(self, fit) -> None:
        if self.log is not None:
            if fit.finished and self.log.tb is not None and fit.state.history:
                add_hparams(self.log.tb, fit.exp.cfg, fit.state.history[-1])
            self.log.close()


def hparams(cfg) -> dict:
    """The config as TensorBoard's hparams plugin takes it: ``section.key`` -> a number, a string or a bool (lists
    and None as their text)."""
    from pyro_lvm.config import to_dict

    flat = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items() if isinstance(values, dict) else [("", values)]:
            name = f"{section}.{key}" if key else section
            flat[name] = value if isinstance(value, bool | int | float | str) else str(value)
    return flat


def add_hparams(tb, cfg, row: dict) -> None:
    """The run's config and final figures (the last metrics row) in TensorBoard's HPARAMS tab, so that runs logged
    into one ``--logdir`` compare by their settings."""
    metrics = {f"hparams/{k}": row[k] for k in ("train_elbo", "val_elbo", "train_objective") if k in row}
    tb.add_hparams(hparams(cfg), metrics, run_name=".", global_step=row["step"])
    tb.flush()


def add_image_grid(tb, tag: str, images: torch.Tensor, image_shape: tuple[int, ...], step: int, nrow: int = 10):
    """``images`` (n, P) in [0, 1] as one grid image, for image_shape (H, W) or (C, H, W)."""
    from torchvision.utils import make_grid

    shape = (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)
    grid = make_grid(images.detach().float().cpu().reshape(-1, *shape).clamp(0, 1), nrow=nrow, padding=1)
    tb.add_image(tag, grid, step)
