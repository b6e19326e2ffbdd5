"""``pyro-lvm sweep CONFIG --grid KEY=V1,V2 ... [--seeds S]``: every combination of the grid's values (and S seeds,
``train.seed`` + 0 .. S − 1) trained one after another into ``OUT/<key=value,...>`` and evaluated, then one table of
them all (``studies.runs_table``). A run whose folder already holds it finished (the same config) is reused and a
stopped one resumed, so an interrupted sweep goes on where it stopped when rerun."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from pyro_lvm import config as config_mod
from pyro_lvm.context import scoped
from pyro_lvm.errors import Interrupted, PyroLVMError
from pyro_lvm.runs.files import finished_runs
from pyro_lvm.studies.run import evaluation, train_or_reuse
from pyro_lvm.studies.runs_table import format_table, runs_table

MAX_RUNS = 1000  # a grid that multiplies out beyond this is a typo more often than a plan


def split_values(text: str) -> list[str]:
    """``"1,2,[64,64]"`` -> ``["1", "2", "[64,64]"]``: commas inside brackets or quotes belong to the value."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(grid: list[str]) -> dict[str, list[str]]:
    """``["model.latent_dim=2,4", ...]`` -> ``{"model.latent_dim": ["2", "4"], ...}``, each key once."""
    out: dict[str, list[str]] = {}
    for item in grid:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or "." not in key:
            raise PyroLVMError(f"--grid {item!r} is not SECTION.KEY=V1,V2,...; e.g. --grid model.latent_dim=2,4,8")
        if key in out:
            raise PyroLVMError(f"--grid names {key} twice; give its values once, e.g. --grid {key}=1,2")
        parts = split_values(values)
        if any(not v for v in parts):
            raise PyroLVMError(f"--grid {item!r} has an empty value; list the values with commas between them")
        out[key] = parts
    if not out:
        raise PyroLVMError("give at least one --grid SECTION.KEY=V1,V2,...")
    return out


def _label(key: str, value: str) -> str:
    short = key.split(".", 1)[1]
    return f"{short}={value}".replace("/", "_").replace(" ", "")


def plan(grid: dict[str, list[str]], seeds: int, base_seed: int) -> list[tuple[str, list[str]]]:
    """(run folder name, overrides) of every run: the grid's combinations in order, each with ``seeds`` seeds."""
    runs = []
    for values in itertools.product(*grid.values()):
        pairs = list(zip(grid, values, strict=True))
        for s in range(seeds):
            overrides = [f"{k}={v}" for k, v in pairs]
            name = ",".join(_label(k, v) for k, v in pairs)
            if seeds > 1:
                overrides.append(f"train.seed={base_seed + s}")
                name += f",seed={base_seed + s}"
            runs.append((name, overrides))
    if len(runs) > MAX_RUNS:
        raise PyroLVMError(f"the grid makes {len(runs):,} runs, more than {MAX_RUNS:,}; give fewer values or seeds")
    return runs


@scoped
def sweep(
    config_path: str | Path,
    grid: list[str],
    seeds: int = 1,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    plugins: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every run of the grid (see the module docstring) into ``out`` (default
    ``runs/<config stem>_sweep``); returns the table's rows, also written as ``OUT/sweep.json`` and ``sweep.csv``."""
    if seeds < 1:
        raise PyroLVMError(f"--seeds {seeds}: give 1 or more")
    base = config_mod.load(config_path, list(overrides or []), plugins=list(plugins or []))
    runs = plan(parse_grid(grid), seeds, base.train.seed)
    configs = [config_mod.with_overrides(base, extra) for _, extra in runs]  # every value checked before any run
    root = Path(out) if out else Path("runs") / f"{Path(config_path).stem}_sweep"
    root.mkdir(parents=True, exist_ok=True)
    for i, ((name, _), cfg) in enumerate(zip(runs, configs, strict=True)):
        run_dir = root / name
        print(f"== run {i + 1}/{len(runs)}: {name}", flush=True)
        cfg = config_mod.with_overrides(cfg, [f"train.out_dir={run_dir}"])
        try:
            train_or_reuse(cfg, run_dir)
        except Interrupted as stop:
            done = ", ".join(finished_runs(root)) or "none"
            raise Interrupted(f"{stop}; the sweep had finished: {done}; rerun it to go on", stop.signum) from None
        evaluation(run_dir)
    rows = runs_table([root / name for name, _ in runs])
    (root / "sweep.json").write_text(format_table(rows, "json"))
    (root / "sweep.csv").write_text(format_table(rows, "csv"))
    return json.loads(format_table(rows, "json"))
