"""Cases of the campaign that stop a train from outside (kill -9, signals), then resume it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from bad_input_corpus import checkpoint_step, toml


def kill_9_mid_run(folder: Path) -> None:
    from bad_input_campaign import env

    (folder / "k.toml").write_text(toml({"train.steps": "400", "train.checkpoint_every": "25"}))
    proc = subprocess.Popen([sys.executable, "-m", "pyro_lvm", "train", "k.toml", "--set", "train.out_dir=run"],
                            cwd=folder, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while not (folder / "run" / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def signal_mid_run(signum: int):
    """A train stopped by ``signum`` before its first periodic checkpoint. What went wrong with the stop (not
    128 + signum, not one ``stopped by`` line, no checkpoint at the step it names) is written to ``stop.txt``
    for ``stopped_then_resumed`` to report; the case itself resumes the run."""

    def setup(folder: Path) -> None:
        from bad_input_campaign import env

        (folder / "k.toml").write_text(toml({"train.steps": "400", "train.checkpoint_every": "100000"}))
        proc = subprocess.Popen([sys.executable, "-m", "pyro_lvm", "train", "k.toml", "--set", "train.out_dir=run"],
                                cwd=folder, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.time() + 60
        while not (folder / "run" / "config.toml").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        line = err.strip().splitlines()[-1] if err.strip() else ""
        name = signal.Signals(signum).name
        problem = ""
        if proc.returncode != 128 + signum or not line.startswith(f"stopped by {name} at step "):
            problem = f"{name}: exit {proc.returncode}, {line!r}"
        elif (found := checkpoint_step(int(line.split(" at step ")[1].split(";")[0]))(folder)) is not None:
            problem = f"{name}: {found}"
        (folder / "stop.txt").write_text(problem)

    return setup


def stopped_then_resumed(folder: Path) -> str | None:
    return (folder / "stop.txt").read_text() or checkpoint_step(400)(folder)
