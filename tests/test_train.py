import json
import subprocess
import sys

import pytest
import torch
from helpers import tiny_config
from pyro.infer import Trace_ELBO

from pyro_lvm.data import Batches
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train
from pyro_lvm.training.state import RunState


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pyro_lvm.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_train_evaluate_sample(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "[data]\nmax_train = 200\n[model]\nlatent_dim = 2\nhidden = [16]\n[guide]\nhidden = [16]\n"
        "[train]\nsteps = 30\nbatch_size = 32\nprogress = false\n[eval]\nnum_samples = 20\n"
        "num_points = 30\n"
    )
    out = cli("train", str(cfg), "--set", "train.steps=25", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / "tiny"
    for name in [
        "checkpoint.pt",
        "config.toml",
        "metrics.json",
        "metrics.csv",
        "elbo_curves.png",
        "reconstructions.png",
        "samples.png",
        "latent.png",
    ]:
        assert (run / name).is_file(), name
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert history[-1]["step"] == 25 and "val_elbo" in history[-1]
    assert "steps = 25" in (run / "config.toml").read_text()  # the resolved config is saved
    again = cli("train", str(cfg), cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    ev = cli("evaluate", str(run), cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    result = json.loads((run / "evaluation.json").read_text())
    assert result["num_points"] == 30 and result["log_px"]["mean"] < 0
    assert cli("sample", str(run), cwd=tmp_path).returncode == 0 and (run / "samples.png").is_file()


def test_cli_errors_are_one_line(tmp_path):
    out = cli("train", "missing.toml", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not found" in out.stderr
    (tmp_path / "c.toml").write_text('[guide]\nname = "nope"\n')
    out = cli("train", "c.toml", cwd=tmp_path)
    assert out.returncode == 2 and "unknown guide 'nope'" in out.stderr and "Traceback" not in out.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    out = cli("evaluate", str(run), cwd=tmp_path)
    assert out.returncode == 2 and "corrupt" in out.stderr and "Traceback" not in out.stderr


def _params(exp):
    return {k: v.clone() for k, v in {**exp.model.state_dict(), **exp.guide.state_dict()}.items()}


@pytest.mark.parametrize(
    "guide,fused,validation,warmup",
    [
        ("amortized", False, True, 0),
        ("per_datapoint", False, True, 0),
        ("amortized", True, True, 0),
        ("amortized", False, False, 0),
        ("per_datapoint", False, False, 150),  # warm-up: the extra β = 1 pass replays the stream, draws nothing
    ],
)
def test_resume_is_exact(tmp_path, guide, fused, validation, warmup):
    """N steps, then resume to 2N, equals 2N steps in one go (parameters, bit for bit). With Pyro validation off
    the step is compiled (elbo.jit = auto): the resumed run compiles afresh mid-way."""
    over = {"guide": {"name": guide}, "data": {"binarize": "dynamic", "max_train": 200}, "optim": {"fused": fused}}
    train_cfg = {"pyro_validation": validation, "kl_warmup_steps": warmup}
    straight = Experiment.from_config(tiny_config(train={"steps": 200, **train_cfg}, **over))
    train(straight, tmp_path / "a")
    first = Experiment.from_config(tiny_config(train={"steps": 100, **train_cfg}, **over))
    train(first, tmp_path / "b")
    resumed = Experiment.from_config(tiny_config(train={"steps": 200, **train_cfg}, **over))
    train(resumed, tmp_path / "b", resume=True)
    assert ("compiled" in resumed.elbo.path) == (not validation), resumed.elbo.path
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    key = "decoder.0.weight"
    assert not torch.equal(_params(first)[key], a[key])  # the second half of training moved the parameters


def test_warmup_history_records_the_elbo_and_the_objective(tmp_path):
    """During KL warm-up, train_objective is −loss(β)/N and train_elbo is −loss(β = 1)/N on the same batch and
    the same draws, both recomputed here by hand with Trace_ELBO; after warm-up the two are one number."""
    cfg = tiny_config(train={"steps": 12, "eval_every": 1, "kl_warmup_steps": 10, "pyro_validation": False})
    history = train(Experiment.from_config(cfg), tmp_path / "w")
    assert [round(r["beta"], 6) for r in history[:3]] == [0.1, 0.2, 0.3]
    assert all(r["train_elbo"] != r["train_objective"] for r in history[:9])  # the KL term is weighted by β < 1
    assert all(r["train_elbo"] == r["train_objective"] for r in history[9:])
    fresh = Experiment.from_config(cfg)  # same seed: same initial parameters, same first batch
    n = len(fresh.data.train)
    batch = Batches(fresh.data.train, 32, cfg.train.seed).batch(0)
    losses = []
    for beta in (0.1, 1.0):
        torch.manual_seed(cfg.train.seed)
        loss = Trace_ELBO().differentiable_loss(
            fresh.model, fresh.guide, batch.x, None, idx=batch.idx, num_data=n, beta=beta
        )
        losses.append(-loss.item() / n)
    assert history[0]["train_objective"] == pytest.approx(losses[0], rel=1e-6)
    assert history[0]["train_elbo"] == pytest.approx(losses[1], rel=1e-6)


def test_fused_adam_follows_the_loop_adam(tmp_path):
    """optim.fused changes the kernel, not the algorithm: after 50 steps from the same start and the same draws,
    parameters agree to rounding (the kernels round differently, so not bit for bit)."""
    runs = {}
    for fused in (False, True):
        exp = Experiment.from_config(tiny_config(train={"steps": 50}, optim={"fused": fused}))
        assert ("fused" in exp.optim.description) == fused
        train(exp, tmp_path / str(fused))
        runs[fused] = _params(exp)
    start = _params(Experiment.from_config(tiny_config()))
    for key, loop in runs[False].items():
        assert torch.allclose(runs[True][key], loop, atol=1e-5), key
    assert not torch.equal(runs[True]["decoder.0.weight"], start["decoder.0.weight"])


class NaNAt:
    """Wraps an ELBO and returns NaN on call number ``bad``."""

    def __init__(self, elbo, bad):
        self.elbo, self.bad, self.calls = elbo, bad, 0

    def differentiable_loss(self, *args, **kwargs):
        self.calls += 1
        loss = self.elbo.differentiable_loss(*args, **kwargs)
        return loss * float("nan") if self.calls == self.bad else loss


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    exp = Experiment.from_config(tiny_config(train={"steps": 30, "checkpoint_every": 10}))
    exp.elbo = NaNAt(exp.elbo, bad=15)
    with pytest.raises(PyroLVMError, match="nan at step 15.*step 10"):
        train(exp, tmp_path)
    state = checkpoint.load(tmp_path / CHECKPOINT)
    assert state["step"] == 10
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    checkpoint.save({"step": 1}, tmp_path / "c.pt")

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(PyroLVMError, match="could not write the checkpoint .* the previous one is intact"):
        checkpoint.save({"step": 2}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 1
    assert not list(tmp_path.glob("*.tmp"))  # the failed write cleaned up after itself


def test_a_wall_clock_budget_stops_training_with_a_checkpoint(tmp_path):
    """train.max_seconds: the run stops at the first step past the budget, records that step and checkpoints it."""
    exp = Experiment.from_config(tiny_config(train={"steps": 100_000, "max_seconds": 1.0, "eval_every": 50}))
    history = train(exp, tmp_path / "run")
    last = history[-1]
    assert 1.0 <= last["time_s"] < 30 and last["step"] < 100_000
    step = RunState.restore(Experiment.from_config(tiny_config(train={"steps": 100_000})), tmp_path / "run", True).step
    assert step == last["step"]
