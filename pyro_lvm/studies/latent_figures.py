"""``pyro-lvm latents RUN``: figures of a trained VAE's latent space, written into the run folder.

- ``interpolation.png``: for each pair of rows (i, j) of a split, the decoder means along
  z_t = (1 − t) E_q[z | x_i] + t E_q[z | x_j], t = 0 .. 1 (one row of the grid per pair, the ends beside it);
- ``traversal.png``: for one row i, E_q[z | x_i] with latent dimension d set to each value (one grid row per d).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.analysis import interpolate, traverse
from pyro_lvm.runs.lock import read_lock
from pyro_lvm.studies import plots
from pyro_lvm.studies.load import load_run


def _row(split, index: int) -> torch.Tensor:
    if not 0 <= index < len(split):
        raise PyroLVMError(f"row {index} is not in the split (0..{len(split) - 1}); choose another with its index")
    return split.x[index]


@torch.no_grad()
@scoped
def latent_figures(
    run_dir: str | Path,
    split: str = "test",
    pairs: list[tuple[int, int]] | None = None,
    traverse_row: int | None = None,
    steps: int = 8,
    span: float = 3.0,
    overrides: list[str] | None = None,
    trust_plugins: bool = False,
) -> list[Path]:
    """Write the figures asked for (``pairs`` to interpolate, ``traverse_row`` to traverse over ±``span`` in
    ``steps`` values) into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    if not pairs and traverse_row is None:
        raise PyroLVMError("ask for a figure: --interpolate I J (rows of the split) and/or --traverse I")
    if steps < 2:
        raise PyroLVMError(f"--steps {steps}: give 2 or more")
    with read_lock(run_dir):  # figures written into the folder describe the checkpoint read (runs/lock.py)
        exp = load_run(run_dir, overrides=overrides, trust_plugins=trust_plugins)
        if exp.data.image_shape is None or exp.condition.kind != "none":
            raise PyroLVMError(
                "latent figures are drawn for VAEs of images (no condition); this run's data has no image shape or "
                f"its model is conditioned on {exp.condition.kind!r}: use pyro_lvm.interpolate / traverse in Python"
            )
        if split not in ("train", "val", "test"):
            raise PyroLVMError(f"--split {split!r} is not one of train, val, test")
        rows = getattr(exp.data, split)
        written = []
        if pairs:
            grid = [interpolate(exp, _row(rows, i), _row(rows, j), steps)[1] for i, j in pairs]  # each (steps, P)
            path = run_dir / "interpolation.png"
            title = f"decoder means from E_q[z|x_i] to E_q[z|x_j], {split} rows " + ", ".join(
                f"{i}→{j}" for i, j in pairs
            )
            plots.image_grid(torch.cat(grid), exp.data.image_shape, path, nrow=steps, title=title)
            written.append(path)
        if traverse_row is not None:
            values = torch.linspace(-span, span, steps, dtype=rows.x.dtype)
            x = _row(rows, traverse_row)
            dims = exp.cfg.model.latent_dim
            grid = [traverse(exp, x, d, values)[1] for d in range(dims)]  # each (steps, P)
            path = run_dir / "traversal.png"
            title = f"{split} row {traverse_row}: one row per latent dimension, z_d from {-span:g} to {span:g}"
            plots.image_grid(torch.cat(grid), exp.data.image_shape, path, nrow=steps, title=title)
            written.append(path)
    return written
