"""Property-based fuzzing of the CLI entry itself (``pyro_lvm.cli.main``, in this process): generated argument
lists over every command and flag of the real parser, with zero, negative, huge, fractional, textual and empty
values, ``--set`` strings, missing paths, a real run folder and a garbage one. Property: the command runs (exit 0),
or it exits with status 2 and exactly one stderr line starting with ``error:``; never status 1 (the last-resort
handler of a bug), never a traceback. Derandomized: the same cases every run.

A command that passes every check and starts its real work (a long train, NUTS, the compare study) is stopped by a
watchdog after a second and counts as running: the property is about what happens before the work starts."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from helpers import tiny_toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_lvm.cli import build_parser, main

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
WATCHDOG_S = 1.0

CONFIG = tiny_toml(2) + "[eval]\nnum_samples = 4\nnum_points = 4\n"

PATHS = ["run", "garbage", "missing", "missing/deeper", "c.toml", "binary.toml", "file.txt", "file.txt/run", "", "."]
VALUES = ["0", "-1", "1", "2", "1000000000", "10**9", "1.5", "-0.5", "nan", "inf", "abc", "", "7", *PATHS]
SET_KEYS = [
    "train.steps", "train.batch_size", "train.device", "train.dtype", "train.seed", "train.checkpoint_every",
    "train.out_dir", "train.max_seconds", "train.micro_batches", "model.latent_dim", "model.hidden", "guide.hidden",
    "guide.name", "prior.name", "prior.num_components", "likelihood.name", "elbo.name", "elbo.num_particles",
    "optim.lr", "optim.name", "data.name", "data.max_train", "data.seed", "data.root", "data.binarize",
    "eval.num_samples", "eval.chunk_size", "eval.batch_size", "eval.num_points", "compare.gap_points",
    "compare.guides", "nonsense.key", "train.nonsense", "train", "",
]  # fmt: skip
SET_VALUES = [
    "0", "-3", "1", "3", "1000000000", "100000000", "1e9", "1.5", "true", '"20"', "[0]", "[-5]", "[8]", "[]",
    "nan", "inf", "'cuda'", "'cpu'", "'float64'", "'amortized'", "'per_datapoint'", "'mog'", "'nonsense'",
    "garbage", "", "{", "[1, 'a']",
]  # fmt: skip


class _Running(BaseException):
    """Raised by the watchdog: the command passed its checks and is doing real work."""


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = _commands()


def _flags(command: str) -> list[tuple[str, bool]]:
    """(option string, takes a value) for every flag of ``command`` in the real parser (but --help)."""
    out = []
    for action in COMMANDS[command]._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                out.append((opt, action.nargs != 0))
    return out


VALID = {  # the positional arguments that make each command's argv valid
    "train": [["c.toml"], ["--resume", "run"]],
    "evaluate": [["run"]],
    "sample": [["run"]],
    "encode": [["run", "--out", "z.npz"]],
    "latents": [["run", "--traverse", "0"], ["run", "--interpolate", "0", "1"]],
    "sweep": [["c.toml", "--grid", "model.latent_dim=1,2", "--out", "sw"]],
    "runs": [["run"]],
    "compare": [["c.toml"]],
    "diagnose": [["run", "--nuts-points", "0"], ["run", "run", "--nuts-points", "0"]],
}


@st.composite
def argvs(draw) -> list[str]:
    command = draw(st.sampled_from([*COMMANDS, *COMMANDS, "trian", "", "--help", "--version", "-h", "--set"]))
    if command not in COMMANDS:
        return [command, *draw(st.lists(st.sampled_from(VALUES), max_size=2))]
    argv = [command]
    if draw(st.integers(0, 3)):  # mostly a valid skeleton, so that the values reach the library's checks
        argv += draw(st.sampled_from(VALID.get(command, [[]])))
    else:
        argv += draw(st.lists(st.sampled_from(PATHS), max_size=2))
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            key, value = draw(st.sampled_from(SET_KEYS)), draw(st.sampled_from(SET_VALUES))
            argv += ["--set", draw(st.sampled_from([f"{key}={value}", f"{key}={value}", key, f"{key}=={value}"]))]
        else:
            flag, takes_value = draw(st.sampled_from(_flags(command)))
            argv += [flag, draw(st.sampled_from(VALUES))] if takes_value else [flag]
    if command == "train" and draw(st.integers(0, 3)):  # a valid train stays short
        argv += ["--set", "train.steps=2"]
    return argv


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A folder with a config, a real run folder (trained by the CLI), a garbage run folder and odd files."""
    root = tmp_path_factory.mktemp("cli_fuzz")
    (root / "c.toml").write_text(CONFIG)
    (root / "binary.toml").write_bytes(bytes(range(256)))
    (root / "file.txt").write_text("a file, not a folder")
    (root / "garbage").mkdir()
    (root / "garbage" / "config.toml").write_bytes(b"\x00\xffnot toml")
    (root / "garbage" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code, err = _run(["train", "c.toml", "--set", "train.out_dir=run"], watchdog=False)
    finally:
        os.chdir(cwd)
    assert code == 0, err
    return root


@contextlib.contextmanager
def _watchdog(seconds: float):
    def stop(signum, frame):
        raise _Running

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run(argv: list[str], watchdog: bool = True) -> tuple[int | str, str]:
    """(exit status, or "running" when the watchdog stopped it; stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with _watchdog(WATCHDOG_S) if watchdog else contextlib.nullcontext():
                code = main(argv)
        except SystemExit as exit_:
            code = 0 if exit_.code is None else exit_.code
        except _Running:
            code = "running"
    return code, err.getvalue()


def check(argv: list[str], folder: Path) -> tuple[int | str, str]:
    """Run ``argv`` in ``folder`` and assert the property; returns (status, stderr)."""
    cwd, path = os.getcwd(), list(sys.path)
    os.chdir(folder)
    try:
        code, err = _run(argv)
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2, "running"), (argv, code, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > 8, (argv, err)
    return code, err


@pytest.fixture
def workdir(pristine, tmp_path) -> Path:
    return tmp_path


def _fresh(pristine: Path, base: Path) -> Path:
    folder = base / "ex"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(pristine, folder)
    return folder


def _started(*args, **kwargs):
    raise _Running


@pytest.fixture
def no_children(monkeypatch):
    """compare's training subprocesses and --nproc's torchrun count as running once they would start: a watchdog
    cannot stop a child process, and the checks before them have run."""
    from pyro_lvm.studies import compare
    from pyro_lvm.training.strategies import launch

    monkeypatch.setattr(compare, "_train_subprocess", _started)
    monkeypatch.setattr(launch, "launch", _started)


@settings(FUZZ, max_examples=320)
@given(argvs())
def test_the_cli_runs_or_refuses_in_one_line(pristine, workdir, no_children, argv):
    check(argv, _fresh(pristine, workdir))


def test_image_grids_leave_stderr_clean(tmp_path):
    """matplotlib's imshow given a torch tensor warned through numpy (copy keyword), a ``note:`` line on every
    successful train and sample."""
    import warnings

    import torch

    from pyro_lvm.studies import plots

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.image_grid(torch.rand(4, 64), (8, 8), tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["train", "c.toml", "--set", "train.seed=18446744073709551616"], "'train.seed': input should be less than"),
        (["train", "c.toml", "--set", "data.seed=-1"], "'data.seed': input should be greater than or equal to 0"),
        (["train", "c.toml", "--set", "train.out_dir="], "'train.out_dir': string should have at least 1"),
        (["train", "c.toml", "--plugin", "broken"], "plugin module 'broken' failed while importing: RuntimeError"),
        (["train", "c.toml", "--plugin", "syntax"], "plugin module 'syntax' failed while importing: SyntaxError"),
    ],
)
def test_what_the_campaign_found_is_one_line(pristine, workdir, argv, words):
    """Found by benchmarks/bad_input_campaign.py: a seed beyond 64 bits overflowed in torch (the last-resort
    handler), an empty out_dir trained into the default folder, a plugin raising on import was called our bug."""
    folder = _fresh(pristine, workdir)
    (folder / "broken.py").write_text("raise RuntimeError('broken plugin')\n")
    (folder / "syntax.py").write_text("def (:\n")
    code, err = check(argv, folder)
    assert code == 2 and words in err, err
