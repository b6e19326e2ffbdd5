"""train.mlflow: the config as params, the metrics rows by step, the figures and the evaluation logged to a real local
MLflow store (sqlite, MLflow's default; the file store where MLFLOW_ALLOW_FILE_STORE allows it), read back with
MLflow's own client; a resume after a failure continues the same MLflow run without doubled steps; nothing imported
or written unless asked; without the package, one line and exit status 2."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from helpers import tiny_config, tiny_toml

from pyro_lvm.cli import main
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.callbacks.mlflow import LINK, absolute_uri, flat_numbers
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason="mlflow is not installed: pip install 'pyro-lvm[mlflow]' (the dev extra installs it)",
)
FIGURES = {"elbo_curves.png", "reconstructions.png", "samples.png", "latent.png"}


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def steps_and_values(c, run_id, key):
    history = sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in history], [m.value for m in history]


@needs_mlflow
def test_a_sweep_logs_params_metrics_figures_and_evaluation_to_mlflows_default_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default store: sqlite:///mlflow.db in the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "tiny.toml").write_text(tiny_toml(4) + "[eval]\nnum_samples = 5\nnum_points = 10\n")
    argv = ["sweep", "tiny.toml", "--grid", "model.latent_dim=1,2", "--out", "sw", "--set", "train.eval_every=2"]
    assert main([*argv, "--set", "train.mlflow=true"]) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client(uri)
    experiment = c.get_experiment_by_name("pyro-lvm")
    runs = {r.info.run_name: r for r in c.search_runs([experiment.experiment_id])}
    assert set(runs) == {"latent_dim=1", "latent_dim=2"}
    for name, run in runs.items():
        run_dir = tmp_path / "sw" / name
        link = json.loads((run_dir / LINK).read_text())
        assert link["tracking_uri"] == uri and link["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["pyro_lvm.run_dir"] == str(run_dir)
        params = run.data.params
        assert params["model.latent_dim"] == name.split("=")[1] and params["guide.name"] == "amortized"
        assert params["model.hidden"] == "[8]" and params["train.mlflow"] == "True"
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
        for key in ("train_elbo", "train_objective", "val_elbo", "beta", "epoch", "time_s"):
            steps, values = steps_and_values(c, run.info.run_id, key)
            assert steps == [2, 4] and values == pytest.approx([row[key] for row in history], rel=1e-6)
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
        for key, expected in [("eval/log_px", evaluation["log_px"]["mean"]),
                              ("eval/log_px_stderr", evaluation["log_px"]["stderr"]),
                              ("eval/elbo", evaluation["elbo"]["mean"]),
                              ("eval/active_units", evaluation["active_units"])]:  # fmt: skip
            assert steps_and_values(c, run.info.run_id, key) == ([4], [pytest.approx(expected, rel=1e-6)])
        artifacts = {f.path for f in c.list_artifacts(run.info.run_id)}
        assert FIGURES | {"evaluation.json"} <= artifacts
        copy = c.download_artifacts(run.info.run_id, "samples.png", str(tmp_path / "dl" / name))
        assert Path(copy).read_bytes() == (run_dir / "samples.png").read_bytes()


class FailAt(Callback):
    """Raises at the metrics row of ``step`` (after the MLflow callback has seen it)."""

    def __init__(self, step):
        self.step = step

    def on_row(self, fit, row):
        if row["step"] == self.step:
            raise RuntimeError("the machine went away")


@needs_mlflow
def test_a_failed_run_resumed_continues_its_mlflow_run_with_each_step_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    run = tmp_path / "run"
    settings = {"eval_every": 5, "checkpoint_every": 10, "mlflow": True, "mlflow_uri": uri}
    settings["mlflow_experiment"] = "resumes"
    with pytest.raises(RuntimeError, match="went away"):  # rows 5 and 10 sent at the checkpoint; 15 never
        train(Experiment.from_config(tiny_config(train=settings)), run, callbacks=[FailAt(15)])
    run_id = json.loads((run / LINK).read_text())["run_id"]
    c = client(uri)
    assert c.get_run(run_id).info.status == "FAILED"
    assert steps_and_values(c, run_id, "train_elbo")[0] == [5, 10]
    longer = tiny_config(train={**settings, "steps": 30})
    history = train(Experiment.from_config(longer), run, resume=True)
    assert json.loads((run / LINK).read_text())["run_id"] == run_id  # the same MLflow run
    steps, values = steps_and_values(c, run_id, "train_elbo")
    assert steps == [5, 10, 15, 20, 25, 30]
    assert values == pytest.approx([row["train_elbo"] for row in history], rel=1e-6)
    finished = c.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params["train.steps"] == "20"  # params never change in MLflow: the new value is a tag
    assert finished.data.tags["resumed_with.train.steps"] == "30"
    assert len(c.search_runs([c.get_experiment_by_name("resumes").experiment_id])) == 1


@needs_mlflow
def test_the_file_store_is_one_line_unless_mlflow_allows_it_and_then_holds_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(train={"steps": 10, "mlflow": True, "mlflow_uri": "./mlruns"})  # the classic local store
    with pytest.raises(PyroLVMError, match="MLFLOW_ALLOW_FILE_STORE=true") as err:
        train(Experiment.from_config(cfg), tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    history = train(Experiment.from_config(cfg), tmp_path / "run")
    link = json.loads((tmp_path / "run" / LINK).read_text())
    assert link["tracking_uri"] == (tmp_path / "mlruns").as_uri()  # recorded absolute
    assert (tmp_path / "mlruns" / link["experiment_id"] / link["run_id"]).is_dir()
    c = client(link["tracking_uri"])
    assert c.get_run(link["run_id"]).data.params["model.latent_dim"] == "2"
    steps, values = steps_and_values(c, link["run_id"], "train_elbo")
    assert steps == [row["step"] for row in history] == [7, 10]  # an epoch of 200 rows, and the last step
    assert values == pytest.approx([row["train_elbo"] for row in history], rel=1e-6)


@needs_mlflow
def test_a_store_that_does_not_open_is_one_line_before_any_run_folder(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    cfg = tiny_config(train={"mlflow": True, "mlflow_uri": f"sqlite:///{tmp_path / 'a_file' / 'm.db'}"})
    with pytest.raises(PyroLVMError, match="does not open .*check train.mlflow_uri") as err:
        train(Experiment.from_config(cfg), tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_nothing_is_imported_or_written_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # any import of mlflow would fail
    monkeypatch.chdir(tmp_path)
    train(Experiment.from_config(tiny_config(train={"steps": 10})), tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (tmp_path / "run" / LINK).exists()


def test_without_the_package_the_cli_says_the_fix_in_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import fails as if not installed
    (tmp_path / "c.toml").write_text(tiny_toml(4))
    argv = [
        "train",
        str(tmp_path / "c.toml"),
        "--set",
        f"train.out_dir={tmp_path / 'run'}",
        "--set",
        "train.mlflow=true",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "pip install 'pyro-lvm[mlflow]'" in err
    assert not (tmp_path / "run").exists()


def test_local_stores_are_recorded_absolute_and_others_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_uri("./mlruns") == absolute_uri("file:./mlruns") == (tmp_path / "mlruns").as_uri()
    assert absolute_uri("file:///abs/mlruns") == "file:///abs/mlruns"
    assert absolute_uri("http://localhost:5000") == "http://localhost:5000"


def test_an_evaluation_flattens_to_named_numbers():
    result = {"split": "test", "log_px": {"mean": -1.5, "stderr": 0.1, "n": 40}, "active_units": 2, "ok": True}
    assert flat_numbers(result) == {"log_px": -1.5, "log_px_stderr": 0.1, "log_px_n": 40.0, "active_units": 2.0}
