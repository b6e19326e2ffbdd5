"""``pyro-lvm runs DIR...``: one table of many run folders, read from their files only (config.toml, metrics.json,
evaluation.json; no checkpoint is loaded and nothing is written): the config keys whose values differ between the
runs, the last training row (step, ELBO, time) and, where ``evaluate`` ran, the test ELBO, log p̂(x) ± s.e. and
active units. As Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any

from tabulate import tabulate

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.files import CONFIG


def run_folders(paths: list[str | Path]) -> list[Path]:
    """Each path that is a run folder, and the run folders one level below each path that is not."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / CONFIG).is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if (p / CONFIG).is_file())
        else:
            raise PyroLVMError(f"{str(path)!r} is not a folder; pass run folders (or folders holding them)")
    if not found:
        raise PyroLVMError(f"no run folder (a folder with {CONFIG}) in {', '.join(map(str, paths))}")
    return found


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        out |= _flat(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return {}  # a damaged file reads as absent: its columns stay empty


def _get(tree: Any, *keys: str) -> Any:
    """tree[k1][k2]..., or None where a level is missing or not a table (a damaged file)."""
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def run_row(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run's flattened config, its metrics) from its files."""
    try:
        config = _flat(tomllib.loads((run_dir / CONFIG).read_text()))
    except (OSError, ValueError) as err:  # unreadable, not UTF-8 (UnicodeDecodeError), not TOML
        raise PyroLVMError(f"{str(run_dir / CONFIG)!r} cannot be read ({err}); is it a run folder?") from None
    history = _get(_read_json(run_dir / "metrics.json"), "history")
    last = history[-1] if isinstance(history, list) and history else {}
    evaluation = _read_json(run_dir / "evaluation.json")
    metrics = {key: _get(last, key) for key in ("step", "train_elbo", "val_elbo", "time_s")}
    metrics |= {
        "eval_split": _get(evaluation, "split"),
        "elbo": _get(evaluation, "elbo", "mean"),
        "log_px": _get(evaluation, "log_px", "mean"),
        "log_px_se": _get(evaluation, "log_px", "stderr"),
        "active_units": _get(evaluation, "active_units"),
    }
    return config, metrics


def runs_table(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per run folder: ``run``, the config keys that differ between the runs, then the metrics."""
    folders = run_folders(paths)
    rows = [(folder, *run_row(folder)) for folder in folders]
    keys = sorted({k for _, config, _ in rows for k in config})
    # train.out_dir differs with every folder, which the run column names already
    differ = [k for k in keys if k != "train.out_dir" and len({repr(config.get(k)) for _, config, _ in rows}) > 1]
    return [{"run": str(folder), **{k: config.get(k) for k in differ}, **metrics} for folder, config, metrics in rows]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict[str, Any]], fmt: str = "md") -> str:
    """The rows as a Markdown table (log p̂(x) as mean ± s.e.), CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)  # a TOML date as its text
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return buffer.getvalue()
    if fmt != "md":
        raise PyroLVMError(f"format {fmt!r} is not one of md, csv, json")
    shown = []
    for row in rows:
        row = dict(row)
        mean, se = row.pop("log_px"), row.pop("log_px_se")
        numbers = all(isinstance(v, int | float) for v in (mean, se))
        row["log p̂(x)"] = f"{mean:.3f} ± {se:.3f}" if numbers else _cell(mean)
        shown.append({k: _cell(v) for k, v in row.items()})
    return tabulate([list(r.values()) for r in shown], headers=list(shown[0]), tablefmt="github")
