"""The files of a run folder: their names, atomic writes, the metrics files, and the rules for a folder a new run
may train into."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pyro_lvm.errors import PyroLVMError

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.toml"
LOCK = ".lock"


@contextmanager
def atomic_file(path: Path, mode: str = "w", newline: str | None = None) -> Iterator[IO]:
    """A file to write in place of ``path``: a temporary file beside it, flushed, synced and renamed over ``path``
    when the block ends, so a reader sees the old file or the new one, never half of one; on any failure the
    temporary file is removed and ``path`` is left as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_metrics(run_dir: Path, history: list[dict], summary: dict) -> None:
    """metrics.json (the history rows and the run's summary) and metrics.csv (the rows), each written atomically."""
    with atomic_file(run_dir / "metrics.json") as f:
        f.write(json.dumps({"history": history, **summary}, indent=2))
    if history:
        keys = sorted({k for row in history for k in row})
        with atomic_file(run_dir / "metrics.csv", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)


def holds_run(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists()


def check_new_run_folder(run_dir: Path, overwrite: bool) -> bool:
    """Whether a new run may train into ``run_dir`` (call under its lock); True when the run it holds is to be
    cleared first (``overwrite``). A folder holding a run without ``overwrite``, or other files, is refused."""
    if holds_run(run_dir):
        if not overwrite:
            raise PyroLVMError(
                f"{str(run_dir)!r} already holds a run; pass --resume {run_dir} to continue it, "
                "--overwrite to start again, or --set train.out_dir=OTHER"
            )
        return True
    if any(p.name != LOCK for p in run_dir.iterdir()):
        raise PyroLVMError(
            f"{str(run_dir)!r} is not empty and holds no run (no {CHECKPOINT} or {CONFIG}); train into a "
            "new or empty folder (--set train.out_dir=OTHER): pyro_lvm never clears other files"
        )
    return False


def finished_runs(root: Path) -> list[str]:
    """The run folders under ``root`` (relative paths) whose metrics reach their config's ``train.steps``: what a
    study stopped midway had finished (a rerun reuses them)."""
    import tomllib

    done = []
    for config in sorted(Path(root).rglob(CONFIG)):
        try:
            steps = tomllib.loads(config.read_text())["train"]["steps"]
            history = json.loads((config.parent / "metrics.json").read_text())["history"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if history and history[-1].get("step") == steps:
            done.append(str(config.parent.relative_to(root)))
    return done
