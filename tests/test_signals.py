"""A signal costs at most one step: SIGINT, SIGTERM and SIGUSR1 finish the step, write a checkpoint at it and stop
with the resume command; resuming gives the uninterrupted run's tensors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import tiny_config, tiny_toml

from pyro_lvm.errors import Interrupted
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train


class SendAt(Callback):
    """Sends ``signum`` to this process at the end of step ``step`` (``times`` times)."""

    def __init__(self, step: int, signum: int, times: int = 1) -> None:
        self.step, self.signum, self.times = step, signum, times

    def on_step_end(self, fit) -> None:
        if fit.state.step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


def tensors(exp) -> list[torch.Tensor]:
    return [t.detach().clone() for m in (exp.model, exp.guide) for t in m.state_dict().values()]


CFG = {"train": {"steps": 20, "checkpoint_every": 1000, "kl_warmup_steps": 8}}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_checkpoints_the_step_it_arrived_in_and_resume_is_exact(tmp_path, signum):
    stop_at = int(torch.randint(1, 19, (1,), generator=torch.Generator().manual_seed(signum)))
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as stopped:
        train(Experiment.from_config(tiny_config(**CFG)), tmp_path / "run", callbacks=[SendAt(stop_at, signum)])
    assert stopped.value.exit_code == 128 + signum
    name = signal.Signals(signum).name
    assert str(stopped.value) == (
        f"stopped by {name} at step {stop_at}; checkpoint written; resume with: pyro-lvm train --resume {tmp_path / 'run'}"
    )
    assert signal.getsignal(signum) == before  # the caller's handler is back
    # before the first periodic checkpoint (every 1000 steps): a checkpoint at the signal's step all the same
    assert checkpoint.load(tmp_path / "run" / CHECKPOINT)["step"] == stop_at

    resumed = Experiment.from_config(tiny_config(**CFG))
    torch.manual_seed(12345)  # the caller's stream moved: resume restores the run's own
    train(resumed, tmp_path / "run", resume=True)
    uninterrupted = Experiment.from_config(tiny_config(**CFG))
    train(uninterrupted, tmp_path / "whole")
    for a, b in zip(tensors(resumed), tensors(uninterrupted), strict=True):
        assert torch.equal(a, b)


def test_signals_during_the_checkpoint_write_leave_a_whole_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save

    def save_while_signalled(obj, f, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a second and third signal while the checkpoint is written
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_while_signalled)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 4"):
        train(Experiment.from_config(tiny_config(**CFG)), tmp_path / "run", callbacks=[SendAt(4, signal.SIGTERM)])
    state = checkpoint.load(tmp_path / "run" / CHECKPOINT)
    assert state["step"] == 4 and not list((tmp_path / "run").glob("*.tmp"))


def test_without_a_run_folder_the_stop_says_nothing_was_saved():
    exp = Experiment.from_config(tiny_config(**CFG))
    with pytest.raises(Interrupted, match="stopped by SIGINT at step 3; no run folder, nothing saved"):
        train(exp, callbacks=[SendAt(3, signal.SIGINT)])


def test_the_cli_stops_on_sigterm_with_a_checkpoint_and_exit_code_143(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_toml(100_000).replace("checkpoint_every = 2", "checkpoint_every = 100000"))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pyro_lvm.cli", "train", str(config), "--set", f"train.out_dir={run}"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (run / "config.toml").exists() and time.monotonic() < deadline:  # written when the fit starts
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = err.strip().splitlines()[-1]
    step = checkpoint.load(run / CHECKPOINT)["step"]
    assert line == f"stopped by SIGTERM at step {step}; checkpoint written; resume with: pyro-lvm train --resume {run}"
    again = subprocess.run(
        [sys.executable, "-m", "pyro_lvm.cli", "train", "--resume", str(run), "--set", f"train.steps={step + 3}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 0, again.stderr
    assert checkpoint.load(run / CHECKPOINT)["step"] == step + 3


def test_a_signal_in_the_last_step_completes_the_run(tmp_path):
    history = train(Experiment.from_config(tiny_config(**CFG)), tmp_path / "run", callbacks=[SendAt(20, signal.SIGINT)])
    assert history[-1]["step"] == 20 and checkpoint.load(tmp_path / "run" / CHECKPOINT)["step"] == 20


def test_the_handlers_are_put_back_when_another_callback_fails_at_the_end():
    class FailsAtEnd(Callback):
        def on_fit_end(self, fit) -> None:
            raise RuntimeError("a user's callback failed")

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    with pytest.raises(RuntimeError, match="a user's callback failed"):
        train(Experiment.from_config(tiny_config(train={"steps": 3})), callbacks=[FailsAtEnd()])
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_stopped_study_names_the_runs_it_had_finished(tmp_path):
    from pyro_lvm.runs.files import finished_runs

    for name, last in [("a", 20), ("b/c", 7), ("d", 20)]:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "config.toml").write_text("[train]\nsteps = 20\n")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"history": [{"step": last}]}))
    (tmp_path / "d" / "metrics.json").write_text("{not json")  # damaged: not counted
    assert finished_runs(tmp_path) == ["a"]
