"""train.tensorboard: scalars for every metrics row and image grids in RUN/tb, read back with TensorBoard's own
reader; a resume continues the curves; without the package, one line and nothing written."""

import sys

import pytest
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.studies.run import train_run
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

pytest.importorskip("tensorboard")


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_scalars_and_images_reach_tensorboard_and_a_resume_continues_them(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(train={"steps": 40, "eval_every": 10, "tensorboard": True})
    _, history = train_run(cfg, run)
    acc = events(run)
    tags = acc.Tags()
    assert {"train/elbo", "train/objective", "train/beta", "val/elbo", "time/step_ms"} <= set(tags["scalars"])
    elbo = acc.Scalars("train/elbo")
    assert [e.step for e in elbo] == [10, 20, 30, 40]
    assert [e.value for e in elbo] == pytest.approx([row["train_elbo"] for row in history], rel=1e-6)
    assert {"samples", "reconstructions"} <= set(tags["images"])
    longer = tiny_config(train={"steps": 60, "eval_every": 10, "tensorboard": True})
    train(Experiment.from_config(longer), run, resume=True)
    assert [e.step for e in events(run).Scalars("train/elbo")] == [10, 20, 30, 40, 50, 60]


def test_without_the_package_one_line_and_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    exp = Experiment.from_config(tiny_config(train={"tensorboard": True}))
    with pytest.raises(PyroLVMError, match=r"pip install 'pyro-lvm\[tensorboard\]'") as err:
        train(exp, tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_the_config_and_final_figures_reach_the_hparams_tab(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    cfg = tiny_config(train={"steps": 20, "eval_every": 10, "tensorboard": True})
    _, history = train_run(cfg, run)
    acc = events(run)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    params = start.session_start_info.hparams
    assert params["model.latent_dim"].number_value == 2 and params["guide.name"].string_value == "amortized"
    assert params["model.hidden"].string_value == "[16]"  # a list as its text
    final = acc.Scalars("hparams/train_elbo")
    assert final[-1].value == pytest.approx(history[-1]["train_elbo"], rel=1e-6)
