"""MLflow tracking of a training run (``train.mlflow = true``; the ``mlflow`` package is an optional extra,
``pip install 'pyro-lvm[mlflow]'``).

What is logged, into one MLflow run per run folder:

- **params**: the resolved config, flattened as ``section.key`` (the names TensorBoard's HPARAMS tab uses);
- **metrics**: every number of every metrics row (``train_elbo``, ``train_objective``, ``beta``, ``val_elbo``,
  ``epoch``, ``time_s``, and what a recipe adds) at the row's step. Rows are sent at each checkpoint, so what the
  MLflow run holds is always what the checkpoint holds: a stopped run resumed with ``--resume`` continues the same
  MLflow run (its id is kept in ``RUN/mlflow.json``) without doubled or orphaned steps;
- **artifacts**: the figures ``train`` writes (``elbo_curves.png``, ``reconstructions.png``, ``samples.png``,
  ``latent.png``) and, when the run is evaluated (``pyro-lvm evaluate``, ``sweep``), ``evaluation.json``, whose
  numbers also become metrics ``eval/<key>`` (``eval/log_px``, ``eval/log_px_stderr``, ...) at the last step.

Why these choices:

- **One config key, recorded in the run folder**, like ``train.tensorboard``: ``--set train.mlflow=true`` on
  ``train``, ``sweep`` or ``compare``, or ``mlflow = true`` under ``[train]``. Because the saved config says so,
  ``evaluate`` and ``--resume`` of the run log to the same MLflow run without a flag to repeat;
  ``--set train.mlflow=false`` turns it off for one command. No separate ``--mlflow`` flag: it would be a second
  spelling of the same switch.
- **Where runs go is MLflow's own rule** unless ``train.mlflow_uri`` names a store: ``MLFLOW_TRACKING_URI``, or
  ``mlflow.set_tracking_uri`` in the same Python process, else MLflow's default: since MLflow 3.7 a local
  ``sqlite:///mlflow.db`` beside artifacts in ``./mlruns`` (``./mlruns`` alone where it already holds runs), so
  ``mlflow ui`` started in the same folder shows them. A relative store is resolved against the working
  directory when training starts and recorded absolute, so ``evaluate`` from elsewhere finds it.
- **The file store** (a plain path such as ``./mlruns``) is refused by MLflow 3.x unless
  ``MLFLOW_ALLOW_FILE_STORE=true``; that refusal, and a database store without its packages (``mlflow-skinny``
  has no SQLAlchemy), are one line before any run folder is made.
- **The extra is full ``mlflow``**, not ``mlflow-skinny``: the default sqlite store needs SQLAlchemy and Alembic,
  and ``mlflow ui`` needs the server; skinny installs fine but can log only to the deprecated file store or a
  server.
- **MlflowClient only**: no active run is started and no global MLflow setting is changed, so a user's own
  ``mlflow.start_run()`` around ``pyro_lvm.train`` is left alone. Only the lead rank of a job logs.
- **Nothing is imported or written unless asked**: with ``train.mlflow = false`` (the default) this module is not
  even imported.

Experiment: ``train.mlflow_experiment`` (default ``"pyro-lvm"``, created when missing); run name: the run
folder's name (a sweep's runs are named by their grid values); tag ``pyro_lvm.run_dir``: its absolute path.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.files import atomic_file
from pyro_lvm.training.callbacks.base import Callback

LINK = "mlflow.json"  # RUN/mlflow.json: the tracking URI, experiment and run id of the run folder's MLflow run
DEFAULT_EXPERIMENT = "pyro-lvm"
INSTALL = "pip install 'pyro-lvm[mlflow]'"
MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's limits per log_batch call


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise PyroLVMError(
            f"train.mlflow = true needs the mlflow package: {INSTALL} (or pip install mlflow), "
            "or set train.mlflow = false"
        ) from None
    return mlflow


def absolute_uri(uri: str) -> str:
    """A local store as an absolute URI (relative paths are taken from the working directory); others as given."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).resolve())
        return uri
    if "://" not in uri and not uri.startswith("file:"):  # a plain path: MLflow's file store
        return Path(uri).resolve().as_uri()
    if uri.startswith("file:") and not uri.startswith("file:///") and not uri.startswith("file://"):
        return Path(uri[len("file:") :]).resolve().as_uri()
    return uri


def tracking_uri(train_cfg: Any) -> str:
    """``train.mlflow_uri``, or the store MLflow itself would log to now (``MLFLOW_TRACKING_URI``,
    ``mlflow.set_tracking_uri``, its default), made absolute."""
    return absolute_uri(train_cfg.mlflow_uri or _mlflow().get_tracking_uri())


def client(uri: str):
    """An ``MlflowClient`` on ``uri`` whose store has opened (a sqlite store is created on first use), or one line
    saying why not (no package; MLflow 3.x refusing its file store; a database store without SQLAlchemy)."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    try:
        out = mlflow.MlflowClient(tracking_uri=uri)
        out.search_experiments(max_results=1)  # opens the store now, not at the first metric
    except ImportError as err:
        raise PyroLVMError(
            f"the MLflow store {uri!r} needs the full mlflow package (missing {err.name or err}; mlflow-skinny has no "
            f"database store): {INSTALL}, or set train.mlflow_uri to another store"
        ) from None
    except MlflowException as err:
        message = str(err)
        if "MLFLOW_ALLOW_FILE_STORE" in message:
            raise PyroLVMError(
                f"MLflow {mlflow.__version__} refuses its file store {uri!r} unless MLFLOW_ALLOW_FILE_STORE=true: set "
                "that variable, or set train.mlflow_uri to a database such as sqlite:///mlflow.db (MLflow's default; "
                "`mlflow migrate-filestore` moves existing runs there)"
            ) from None
        raise PyroLVMError(
            f"MLflow store {uri!r}: {message.splitlines()[0] if message else type(err).__name__}"
        ) from None
    except Exception as err:  # noqa: BLE001 - a store that does not open (a sqlite file in a missing folder, ...)
        summary = str(err).splitlines()[0] if str(err) else ""
        raise PyroLVMError(
            f"MLflow store {uri!r} does not open ({type(err).__name__}: {summary}); check train.mlflow_uri "
            "or MLFLOW_TRACKING_URI"
        ) from None
    return out


def require(train_cfg: Any) -> None:
    """Check, before any run folder is made, that the package is installed and the store opens."""
    client(tracking_uri(train_cfg))


def flat_params(cfg: Any) -> dict[str, str]:
    """The config as MLflow params: ``section.key`` -> its value as text."""
    from pyro_lvm.config import to_dict

    flat = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items() if isinstance(values, dict) else [("", values)]:
            flat[f"{section}.{key}" if key else section] = str(value)
    return flat


def _metrics(values: dict[str, Any], step: int, prefix: str = ""):
    """MLflow ``Metric`` entities of the numbers in ``values`` (bools, text and nested tables left out)."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    out = []
    for key, value in values.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out.append(Metric(f"{prefix}{key}", float(value), stamp, int(step)))
    return out


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Link:
    """One MLflow run: its client and id."""

    def __init__(self, client, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    @classmethod
    def of(cls, run_dir: Path | str | None) -> Link | None:
        """The MLflow run recorded in ``run_dir`` (``RUN/mlflow.json``), or None where none is recorded."""
        path = None if run_dir is None else Path(run_dir) / LINK
        if path is None or not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text())
            uri, run_id = saved["tracking_uri"], saved["run_id"]
        except (ValueError, KeyError, TypeError):
            raise PyroLVMError(
                f"{str(path)!r} is not a record of an MLflow run (tracking_uri, run_id); remove it, or set "
                "train.mlflow = false for this command"
            ) from None
        return cls(client(uri), run_id)

    def log_metrics(self, metrics: list) -> None:
        for chunk in _batches(metrics, MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_params(self, params: dict[str, str]) -> None:
        """Params not logged yet; a value that changed since (a resume with ``--set``) becomes a tag
        ``resumed_with.KEY`` (MLflow params cannot change)."""
        from mlflow.entities import Param, RunTag

        logged = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        changed = [RunTag(f"resumed_with.{k}", v) for k, v in params.items() if k in logged and logged[k] != v]
        for chunk in _batches(new, MAX_PARAMS):
            self.client.log_batch(self.run_id, params=chunk)
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, str(path))


def start(train_cfg: Any, run_dir: Path | None, resuming: bool) -> Link:
    """The run folder's MLflow run: the one recorded there when resuming into the same store, else a new one in
    ``train.mlflow_experiment`` (recorded in ``RUN/mlflow.json``), marked RUNNING."""
    uri = tracking_uri(train_cfg)
    mlflow_client = client(uri)
    saved = Link.of(run_dir) if resuming else None
    if saved is not None and saved.client.tracking_uri == uri:
        from mlflow.exceptions import MlflowException

        try:
            run = mlflow_client.get_run(saved.run_id)
        except MlflowException:  # deleted from the store since: a new MLflow run
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            mlflow_client.update_run(run.info.run_id, status="RUNNING")
            return Link(mlflow_client, run.info.run_id)
    name = train_cfg.mlflow_experiment
    found = mlflow_client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found is not None else mlflow_client.create_experiment(name)
    tags = {"pyro_lvm.run_dir": str(run_dir.resolve())} if run_dir is not None else {}
    run = mlflow_client.create_run(experiment_id, run_name=run_dir.name if run_dir else None, tags=tags)
    if run_dir is not None:
        record = {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run.info.run_id}
        with atomic_file(run_dir / LINK) as f:
            f.write(json.dumps(record, indent=2))
    return Link(mlflow_client, run.info.run_id)


class MLflow(Callback):
    """The config as params, the rows as metrics (sent at each checkpoint), the run's status at the end; the lead
    rank only."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir, self.link, self.rows = run_dir, None, []

    def on_fit_start(self, fit) -> None:
        if not fit.strategy.is_lead:
            return
        self.link = start(fit.exp.cfg.train, self.run_dir, fit.state.resumed)
        self.link.log_params(flat_params(fit.exp.cfg))

    def on_row(self, fit, row: dict) -> None:
        if self.link is not None:
            self.rows.append(row)  # the row itself: keys later callbacks add are there by the checkpoint

    def on_checkpoint(self, fit) -> None:
        if self.link is not None and self.rows:
            self.link.log_metrics([m for row in self.rows for m in _metrics(row, row["step"])])
            self.rows = []

    def on_fit_end(self, fit) -> None:
        if self.link is None:
            return
        status = "FINISHED" if fit.finished else "KILLED" if fit.stop else "FAILED"
        self.link.client.set_terminated(self.link.run_id, status=status)


def log_figures(run_dir: Path, paths: list[Path]) -> None:
    """The figures of a run folder as artifacts of its MLflow run (none recorded: nothing)."""
    link = Link.of(run_dir)
    if link is not None:
        link.log_files(paths)


def flat_numbers(result: dict, prefix: str = "") -> dict[str, float]:
    """``{"log_px": {"mean": m, "stderr": s, "n": n}, "K": 100}`` -> ``{"log_px": m, "log_px_stderr": s,
    "log_px_n": n, "K": 100}``: the numbers of an evaluation, nested tables flattened."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}_{key}" if prefix else key
        if isinstance(value, dict):
            inner = flat_numbers(value, name)
            if prefix == "" and f"{name}_mean" in inner:
                inner[name] = inner.pop(f"{name}_mean")
            out.update(inner)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def log_evaluation(link: Link | None, run_dir: Path, result: dict, path: Path | None = None) -> None:
    """An evaluation's numbers as metrics ``eval/KEY`` at the run's last step, and its file as an artifact, to
    ``link`` (``Link.of(run_dir)``; None: nothing)."""
    if link is None:
        return
    metrics = Path(run_dir) / "metrics.json"
    history = json.loads(metrics.read_text()).get("history") if metrics.is_file() else None
    step = history[-1]["step"] if history else 0
    link.log_metrics(_metrics(flat_numbers(result), step, prefix="eval/"))
    if path is not None:
        link.log_files([path])
