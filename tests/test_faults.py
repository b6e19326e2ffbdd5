"""Faults during a run: a second writer, a file-size limit during a checkpoint write, NaN in a gradient and in an
Adam moment, damaged checkpoints. Each ends in one line, and the last good checkpoint is never overwritten."""

import fcntl
import os
import resource
import subprocess
import sys

import pytest
import torch
from helpers import tiny_config, tiny_toml

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

CONFIG = tiny_toml(6)


def _cli(args, cwd, preexec_fn=None):
    return subprocess.run(
        [sys.executable, "-m", "pyro_lvm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=preexec_fn,
    )


def test_a_second_writer_is_refused_and_a_stale_lock_does_not_block(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)
    run = tmp_path / "runs" / "c"
    run.mkdir(parents=True)
    with open(run / ".lock", "a+") as held:  # another live process holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        done = _cli(["train", "c.toml"], tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1
        assert "in use by another pyro-lvm train (pid 4242)" in done.stderr
        (run / "config.toml").write_text("the running train's")
        overwrite = _cli(["train", "c.toml", "--overwrite"], tmp_path)
        assert overwrite.returncode == 2 and "in use by another pyro-lvm train (pid 4242)" in overwrite.stderr
        assert (run / "config.toml").read_text() == "the running train's"  # nothing cleared under the holder
    (run / "config.toml").unlink()
    # the holder is gone (as after kill -9): its lock file stays, and blocks nothing
    assert (run / ".lock").exists()
    done = _cli(["train", "c.toml"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run / CHECKPOINT).is_file()


def test_a_file_size_limit_during_a_checkpoint_write_is_one_line_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "c.toml").write_text(CONFIG)

    def limit():  # the config (~1 kB) fits, a checkpoint (tens of kB) does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    done = _cli(["train", "c.toml"], tmp_path, preexec_fn=limit)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "could not write the checkpoint" in done.stderr and "File too large" in done.stderr
    run = tmp_path / "runs" / "c"
    assert not list(run.glob("*.tmp")) and not (run / CHECKPOINT).exists()


def _poisoned(monkeypatch, exp, at_step: int, poison) -> None:
    """Call ``poison(exp)`` right after the optimiser's step number ``at_step``."""
    step, calls = exp.optim.step, {"n": 0}

    def patched():
        step()
        calls["n"] += 1
        if calls["n"] == at_step:
            poison(exp)

    monkeypatch.setattr(exp.optim, "step", patched)


@pytest.mark.parametrize("where", ["gradient", "moment"])
def test_nan_in_a_gradient_or_an_adam_moment_stops_before_the_checkpoint_is_overwritten(tmp_path, monkeypatch, where):
    cfg = tiny_config(train={"steps": 8, "checkpoint_every": 4})
    exp = Experiment.from_config(cfg)
    if where == "gradient":
        backward = torch.Tensor.backward

        def nan_backward(self, *args, **kwargs):  # the 6th loss's gradient carries a NaN
            backward(self, *args, **kwargs)
            nan_backward.calls += 1
            if nan_backward.calls == 6:
                exp.model.decoder[0].weight.grad[0, 0] = float("nan")

        nan_backward.calls = 0
        monkeypatch.setattr(torch.Tensor, "backward", nan_backward)
        expected = "non-finite gradient model.decoder.0.weight at step 6"
    else:

        def poison(e):
            state = e.optim.dense.state[e.model.decoder[0].weight]
            state["exp_avg_sq"][0, 0] = float("inf")

        _poisoned(monkeypatch, exp, 5, poison)
        expected = "non-finite state optim.dense.state"
    with pytest.raises(PyroLVMError, match=expected) as info:
        train(exp, tmp_path)
    assert "last good checkpoint (step 4)" in str(info.value)
    state = checkpoint.load(tmp_path / CHECKPOINT)  # the step-4 checkpoint, intact and finite
    assert state["step"] == 4


def test_train_never_clears_a_folder_that_holds_no_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PyroLVMError, match="is not empty and holds no run"):
        train(Experiment.from_config(tiny_config()), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_damaged_checkpoints_are_refused_with_one_line(tmp_path):
    cfg = tiny_config(train={"steps": 4, "checkpoint_every": 2})
    train(Experiment.from_config(cfg), tmp_path)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["rng"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(PyroLVMError, match="lacks rng; it is damaged"):
        checkpoint.load(tmp_path / "missing.pt")
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    next(iter(state["model"].values()))[0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(PyroLVMError, match="holds non-finite values"):
        checkpoint.load(tmp_path / "nan.pt")
    # resuming with fewer steps than the checkpoint has
    with pytest.raises(PyroLVMError, match="at step 4, beyond train.steps = 3"):
        train(Experiment.from_config(tiny_config(train={"steps": 3})), tmp_path, resume=True)


def test_a_huge_learning_rate_never_ends_silently(tmp_path):
    """optim.lr = 1e6 on a small net used to train to the end with inf Adam moments saved: now the run ends in a
    one-line stop naming a non-finite tensor, or finishes with a finite state."""
    cfg = tiny_config(optim={"lr": 1e6}, train={"steps": 60, "checkpoint_every": 20, "pyro_validation": False})
    try:
        train(Experiment.from_config(cfg), tmp_path)
    except PyroLVMError as err:
        assert "non-finite" in str(err) or "loss became" in str(err)
        assert "\n" not in str(err)
    if (tmp_path / CHECKPOINT).exists():
        checkpoint.load(tmp_path / CHECKPOINT)  # whatever was saved is finite


def test_a_resume_or_evaluation_that_changes_what_the_run_is_is_refused(tmp_path):
    cfg = tiny_config(train={"steps": 4, "checkpoint_every": 2})
    train(Experiment.from_config(cfg), tmp_path)
    for change in ({"data": {"seed": 5}}, {"model": {"latent_dim": 3}}, {"train": {"seed": 1, "steps": 6}}):
        with pytest.raises(PyroLVMError, match="was trained with") as info:
            changed = tiny_config(**{k: {**v, "steps": 6} if k == "train" else v for k, v in change.items()})
            train(Experiment.from_config(changed), tmp_path, resume=True)
        assert "\n" not in str(info.value)
    from pyro_lvm.training.state import RunState

    # what may change: more steps, the ELBO, the optimiser; test-time settings for an evaluation
    more = tiny_config(train={"steps": 6, "checkpoint_every": 2}, optim={"lr": 0.01}, elbo={"num_particles": 2})
    history = train(Experiment.from_config(more), tmp_path, True)
    assert history[-1]["step"] == 6
    evaluation = tiny_config(train={"seed": 3, "steps": 1}, eval={"num_samples": 7}, data={"root": "/elsewhere"})
    assert RunState.restore(Experiment.from_config(evaluation), tmp_path).step == 6  # train.* is checked on resume only
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    del state["identity"]  # a checkpoint written before runs recorded their identity
    torch.save(state, tmp_path / CHECKPOINT)
    assert RunState.restore(Experiment.from_config(tiny_config(data={"seed": 5})), tmp_path).step == 6
    (tmp_path / "c.toml").write_text(CONFIG)
    both = _cli(["train", "c.toml", "--resume", str(tmp_path)], tmp_path)
    assert both.returncode == 2 and "drop 'c.toml'" in both.stderr


def test_requests_beyond_the_machines_memory_are_refused_before_allocating(monkeypatch):
    from pyro_lvm import resources
    from pyro_lvm.evaluation.estimates import evaluate_split

    monkeypatch.setattr(resources, "physical_memory", lambda: 2**30)  # a 1 GiB machine
    with pytest.raises(PyroLVMError, match=r"needs about .* GiB, more than this machine can hold \(0.8 GiB"):
        Experiment.from_config(tiny_config(model={"hidden": [20_000, 20_000]}))
    exp = Experiment.from_config(tiny_config())
    with pytest.raises(PyroLVMError, match="lower eval.chunk_size or eval.batch_size"):
        evaluate_split(exp.model, exp.guide, exp.data.test, exp.condition, 10, 100_000, 64)
    assert evaluate_split(exp.model, exp.guide, exp.data.test, exp.condition, 10, 10, 4, num_points=8)


@pytest.mark.slow
def test_kill_9_at_a_random_moment_then_resume_gives_the_uninterrupted_parameters(tmp_path):
    import random
    import signal
    import time

    config_text = CONFIG.replace("steps = 6", "steps = 400").replace("checkpoint_every = 2", "checkpoint_every = 25")
    (tmp_path / "c.toml").write_text(config_text)
    straight = _cli(["train", "c.toml", "--set", "train.out_dir=straight"], tmp_path)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_lvm", "train", "c.toml", "--set", "train.out_dir=killed"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not (tmp_path / "killed" / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)["step"] < 400
    resumed = _cli(["train", "--resume", "killed"], tmp_path)  # the dead process's lock blocks nothing
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)
    assert a["step"] == b["step"] == 400
    for part in ("model", "guide"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
