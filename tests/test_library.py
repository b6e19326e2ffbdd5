"""The library as a guest in the user's process: components own their options, user components come from the
user's own module (plugins), the public API works without run folders, and importing changes nothing global."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import pyro_lvm
from pyro_lvm import config
from pyro_lvm.errors import PyroLVMError

PLUGIN = '''
import pyro.distributions as dist
import torch
from pydantic import Field
from pyro.nn import PyroModule
from torch import nn

from pyro_lvm import Options, register_network, register_prior


class LaplaceOptions(Options):
    scale: float = Field(1.0, gt=0.0)


@register_prior("laplace", LaplaceOptions)
class LaplacePrior(PyroModule):
    """p(z) = prod_d Laplace(z_d; 0, scale)."""

    def __init__(self, latent_dim, scale=1.0, **_):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.scale = scale

    def forward(self, c=None):
        return dist.Laplace(self.loc, self.scale * torch.ones_like(self.loc)).to_event(1)


@register_network("linear")
def linear(n_in, n_out, hidden, **_):
    return nn.Linear(n_in, n_out)
'''

CONFIG = """
plugins = ["my_lvm"]
[data]
max_train = 200
[model]
latent_dim = 2
net = "linear"
[prior]
name = "laplace"
scale = 0.5
[guide]
hidden = [16]
[train]
steps = STEPS
batch_size = 32
progress = false
checkpoint_every = 10
[eval]
num_samples = 20
num_points = 30
"""


def _cli(args, cwd, **env):
    return subprocess.run(
        [sys.executable, "-m", "pyro_lvm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )


def test_component_owns_its_options():
    cfg = config.from_dict({"guide": {"name": "semi_amortized", "refine_steps": 3}})
    assert cfg.guide.refine_steps == 3
    with pytest.raises(PyroLVMError) as info:
        config.from_dict({"guide": {"name": "amortized", "refine_steps": 5}})
    message = str(info.value)
    assert "\n" not in message and "'guide.refine_steps'" in message
    assert "guide 'amortized' has the options hidden, net" in message and "guide 'semi_amortized'" in message
    # the resolved config of a run holds the chosen components' options only
    saved = config.to_dict(config.from_dict({"guide": {"name": "per_datapoint"}, "prior": {"name": "mog"}}))
    assert set(saved["guide"]) == {"name", "init_scale"}
    assert set(saved["prior"]) == {"name", "num_components", "per_class"}


def test_switching_a_component_on_the_command_line_drops_the_files_options(tmp_path):
    (tmp_path / "c.toml").write_text('[guide]\nname = "amortized"\nhidden = [8]\n')
    with pytest.warns(UserWarning, match="keys hidden are options of 'amortized'"):
        cfg = config.load(tmp_path / "c.toml", ["guide.name=per_datapoint"])
    assert cfg.guide.name == "per_datapoint"
    with (
        pytest.raises(PyroLVMError, match="guide 'per_datapoint' has the options init_scale"),
        pytest.warns(UserWarning),
    ):
        config.load(tmp_path / "c.toml", ["guide.name=per_datapoint", "guide.hidden=[3]"])


def test_run_folder_configs_with_every_key_still_load(tmp_path):
    """Run folders written when every section held every key: unused keys are dropped on reopening."""
    old = {
        "guide": {"name": "amortized", "hidden": [8], "init_scale": 1.0, "refine_steps": 5, "refine_lr": 0.1},
        "prior": {"name": "standard_normal", "num_components": 10, "per_class": False, "hidden": [128]},
        "elbo": {"name": "trace", "num_particles": 1, "alpha": 0.0, "jit": "auto"},
    }
    import tomli_w

    (tmp_path / "config.toml").write_text(tomli_w.dumps(old))
    cfg = config.load(tmp_path / "config.toml", saved=True)
    assert cfg.guide.hidden == [8] and not hasattr(cfg.elbo, "alpha")
    with pytest.raises(PyroLVMError, match="unknown config key 'prior.num_components'"):
        config.load(tmp_path / "config.toml")  # a user's config is never pruned


def test_plugin_components_train_resume_evaluate_and_sample(tmp_path):
    (tmp_path / "my_lvm.py").write_text(PLUGIN)
    (tmp_path / "c.toml").write_text(CONFIG.replace("STEPS", "20"))
    done = _cli(["train", "c.toml"], tmp_path)
    assert done.returncode == 0, done.stderr
    saved = (tmp_path / "runs" / "c" / "config.toml").read_text()
    assert 'plugins = [\n    "my_lvm",\n]' in saved or 'plugins = ["my_lvm"]' in saved
    # reopening the run imports my_lvm.py from the current folder only when asked (pyro_lvm/config/trust.py)
    assert _cli(["train", "--resume", "runs/c", "--set", "train.steps=30"], tmp_path).returncode == 2
    resumed = _cli(["train", "--resume", "runs/c", "--set", "train.steps=30", "--plugin", "my_lvm"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "runs/c/metrics.json").read_text())["history"][-1]["step"] == 30
    evaluated = _cli(["evaluate", "runs/c", "--trust-plugins"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((tmp_path / "runs/c/evaluation.json").read_text())
    assert result["num_points"] == 30 and result["log_px"]["mean"] >= result["elbo"]["mean"]
    assert _cli(["sample", "runs/c", "--num", "4", "--plugin", "my_lvm"], tmp_path).returncode == 0
    # --plugin instead of the config key; the run's saved config records it for later commands
    (tmp_path / "d.toml").write_text(CONFIG.replace("STEPS", "10").replace('plugins = ["my_lvm"]', ""))
    assert _cli(["train", "d.toml"], tmp_path).returncode == 2
    assert _cli(["train", "d.toml", "--plugin", "my_lvm"], tmp_path).returncode == 0
    assert _cli(["evaluate", "runs/d", "--plugin", "my_lvm"], tmp_path).returncode == 0


def test_plugin_errors_are_one_line(tmp_path):
    (tmp_path / "c.toml").write_text('plugins = ["no_such_module"]\n')
    missing = _cli(["train", "c.toml"], tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "plugin module 'no_such_module' not found" in missing.stderr
    (tmp_path / "twice.py").write_text(
        "from pyro_lvm import register_prior\n\n@register_prior('standard_normal')\nclass Mine:\n    pass\n"
    )
    (tmp_path / "c.toml").write_text('plugins = ["twice"]\n')
    twice = _cli(["train", "c.toml"], tmp_path)
    assert twice.returncode == 2 and twice.stderr.count("\n") == 1
    assert "prior 'standard_normal' is registered twice" in twice.stderr
    (tmp_path / "c.toml").write_text("[train]\n")
    unknown = _cli(["train", "c.toml", "--set", "guide.refine_steps=5"], tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "guide 'amortized' has the options hidden, net" in unknown.stderr


def test_import_changes_no_global_setting_and_plain_pyro_svi_trains_our_vae():
    """The user's ordinary Pyro code in the same process: our VAE and encoder guide under plain SVI with
    pyro.optim.Adam (which failed while import set module_local_params for the whole process)."""
    script = textwrap.dedent(
        """
        import pyro, torch
        import pyro_lvm
        from pyro_lvm.guides import AmortizedGuide
        from pyro_lvm.models.likelihoods import BernoulliLikelihood
        from pyro_lvm.models.priors import StandardNormalPrior
        from pyro_lvm.models.vae import VAE
        from pyro_lvm.nn import mlp
        from sklearn.datasets import load_digits

        assert pyro.settings.get("module_local_params") is False
        pyro.set_rng_seed(0)
        x = (torch.as_tensor(load_digits().data[:256], dtype=torch.float32) > 8).float()
        model = VAE(StandardNormalPrior(4), BernoulliLikelihood(), mlp([4, 32, 64]), 4)
        guide = AmortizedGuide(64, 4, hidden=[32])
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
        losses = [svi.step(x) for _ in range(150)]
        assert sum(losses[-10:]) < 0.8 * sum(losses[:10]), (losses[:3], losses[-3:])
        assert pyro.settings.get("module_local_params") is False

        # the library's own run (figures included) leaves Pyro's settings and matplotlib's backend alone
        import sys, tempfile
        validation = pyro.infer.util.is_validation_enabled()
        cfg = pyro_lvm.config_from_dict({"data": {"max_train": 100}, "model": {"latent_dim": 2, "hidden": [8]},
                                         "guide": {"hidden": [8]}, "train": {"steps": 5, "progress": False}})
        with tempfile.TemporaryDirectory() as run_dir:
            pyro_lvm.train(pyro_lvm.Experiment.from_config(cfg), run_dir=run_dir)
        assert pyro.settings.get("module_local_params") is False
        assert pyro.infer.util.is_validation_enabled() == validation
        assert "matplotlib.pyplot" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_public_api_from_tensors_without_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (torch.as_tensor(bunch.data[:400], dtype=torch.float32) > 8).float()
    data = pyro_lvm.from_tensors(x.reshape(-1, 8, 8), torch.as_tensor(bunch.target[:400]), seed=3)
    assert data.image_shape == (8, 8) and data.num_classes == 10 and data.num_features == 64
    assert len(data.train) + len(data.val) + len(data.test) == 400
    cfg = pyro_lvm.config_from_dict(
        {"model": {"latent_dim": 2, "hidden": [16]}, "guide": {"hidden": [16]}, "eval": {"num_samples": 20}}
    )
    cfg = pyro_lvm.with_overrides(cfg, ["train.steps=30", "train.progress=false"])
    exp = pyro_lvm.Experiment.from_config(cfg, data)
    history = pyro_lvm.train(exp)
    assert history[-1]["step"] == 30 and "val_elbo" in history[-1]
    result = pyro_lvm.evaluate(exp)
    assert result["split"] == "test" and result["num_points"] == len(data.test)
    assert pyro_lvm.sample(exp, 5).shape == (5, 64)
    assert list(tmp_path.iterdir()) == []  # nothing written unless asked
    with pytest.raises(PyroLVMError, match="labels have shape"):
        pyro_lvm.from_tensors(x, torch.zeros(3))


def test_experiment_from_objects_trains_a_users_model_and_guide(tmp_path):
    """Modules built outside ``pyro_lvm.scope`` (as a user's script builds them) train inside our calls, keep their
    parameters to themselves, and their run folder holds no config.toml (it would describe other objects)."""
    import pyro

    from pyro_lvm.guides import AmortizedGuide
    from pyro_lvm.models.likelihoods import BernoulliLikelihood
    from pyro_lvm.models.priors import MixturePrior
    from pyro_lvm.models.vae import VAE
    from pyro_lvm.nn import mlp

    x = torch.bernoulli(torch.full((300, 12), 0.3), generator=torch.Generator().manual_seed(0))
    with pyro.settings.context(module_local_params=False):
        model = VAE(MixturePrior(2, 3), BernoulliLikelihood(), mlp([2, 8, 12]), 2)  # PyroParams in the prior
        guide = AmortizedGuide(12, 2, hidden=[8])
    exp = pyro_lvm.Experiment.from_objects(
        model, guide, pyro_lvm.from_tensors(x), overrides=["train.steps=40", "train.progress=false"]
    )
    history = pyro_lvm.train(exp, run_dir=tmp_path)
    assert history[-1]["step"] == 40 and history[-1]["train_elbo"] > history[0]["train_elbo"]
    assert "prior.locs_unconstrained" in dict(model.named_parameters()) and not pyro.get_param_store().keys()
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "config.toml").exists()


def test_everything_public_is_reachable():
    for name in pyro_lvm.__all__:
        assert getattr(pyro_lvm, name) is not None, name
    with pytest.raises(AttributeError):
        pyro_lvm.not_a_name  # noqa: B018
