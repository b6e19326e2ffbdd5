"""Files for other tools: a run's latent codes (``pyro-lvm encode``) and prior draws (``pyro-lvm sample --out``),
as NumPy ``.npz`` or ``.csv``. The run folder is opened read-only (``pyro_lvm.studies.load``); only ``out`` is
written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from pyro_lvm.context import scoped
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.analysis import encode, prior_draws
from pyro_lvm.runs.files import atomic_file
from pyro_lvm.studies.load import load_run

SUFFIXES = (".npz", ".csv")


def _check_out(out: Path) -> None:
    if out.suffix not in SUFFIXES:
        raise PyroLVMError(f"--out {str(out)!r} must end in .npz or .csv")
    if not out.parent.is_dir():
        raise PyroLVMError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not exist; create it first")


def write_table(out: Path, columns: dict[str, np.ndarray]) -> None:
    """``columns`` (name -> (N,) or (N, K) array) as an .npz of arrays, or a .csv with a column per entry (a
    (N, K) array becomes name_0 .. name_{K-1})."""
    if out.suffix == ".npz":
        with atomic_file(out, "wb") as f:
            np.savez(f, **columns)
        return
    names, parts = [], []
    for name, values in columns.items():
        table = values.reshape(len(values), -1)  # (N, K)
        names += [name] if values.ndim == 1 else [f"{name}_{k}" for k in range(table.shape[1])]
        parts.append(table)
    with atomic_file(out, "w") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i in range(len(parts[0])):  # each column keeps its type (an index stays an integer)
            writer.writerow([value for table in parts for value in table[i].tolist()])


@scoped
def encode_run(
    run_dir: str | Path, split: str, out: str | Path, num_points: int | None = None, overrides=None, trust_plugins=False
) -> int:
    """q(z | x) of the first ``num_points`` rows of ``split`` to ``out``: ``index``, ``label``, ``mean`` (N, D),
    ``scale`` (N, D), and ``converged`` for q* fits (per-datapoint guide, splits other than train). Returns N."""
    out = Path(out)
    _check_out(out)
    exp = load_run(run_dir, overrides=overrides, trust_plugins=trust_plugins)
    if split not in ("train", "val", "test"):
        raise PyroLVMError(f"--split {split!r} is not one of train, val, test")
    rows = getattr(exp.data, split).head(num_points)
    target, c = exp.condition(rows.x, rows.y)
    index = torch.arange(len(rows), device=exp.device)
    by_row = not exp.amortized and split == "train"  # the table's own rows
    enc = encode(exp, None if by_row else target, None if by_row else c, idx=index if by_row else None)
    columns = {"index": index.cpu().numpy(), "label": rows.y.cpu().numpy()}
    columns |= {"mean": enc.mean.cpu().numpy(), "scale": enc.scale.cpu().numpy()}
    if enc.converged is not None:
        columns["converged"] = np.full(len(rows), enc.converged)
    write_table(out, columns)
    return len(rows)


@scoped
def sample_file(
    run_dir,
    num: int,
    out: str | Path,
    what: str = "mean",
    label: str | None = None,
    overrides=None,
    trust_plugins=False,
):
    """``num`` prior draws (``what``: "mean", "draws" or "latents"; a label CVAE's ``label``) to ``out`` as
    ``samples`` (num, P or D), seeded by ``eval.seed``."""
    out = Path(out)
    _check_out(out)
    exp = load_run(run_dir, overrides=overrides, trust_plugins=trust_plugins)
    c = None
    if exp.condition.kind == "label":
        if label is None or not str(label).isdigit() or int(label) >= exp.condition.num_classes:
            raise PyroLVMError(f"this CVAE needs --condition LABEL (0..{exp.condition.num_classes - 1})")
        y = torch.full((num,), int(label), dtype=torch.long, device=exp.device)
        c = exp.condition.labels(y, exp.data.train.x.dtype)
    elif exp.condition.kind != "none" or label is not None:
        raise PyroLVMError(
            f"--out draws from p(z) or a label CVAE's p(z | c); this run's condition is {exp.condition.kind!r}"
        )
    write_table(out, {"samples": prior_draws(exp, num, c, what, exp.cfg.eval.seed).cpu().numpy()})
