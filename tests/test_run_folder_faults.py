"""Run folders under faults: readers (evaluate, sample, diagnose) against a train that holds the folder, an output
folder that cannot be written, a checkpoint write that fails mid-run. Each is one line; nothing half-written stays."""

import os

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.runs.lock import read_lock, run_lock
from pyro_lvm.studies.diagnose import DiagnoseOptions, diagnose
from pyro_lvm.studies.report import evaluate_run, sample_run
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run"
    train(Experiment.from_config(tiny_config(train={"steps": 2, "checkpoint_every": 2})), folder)
    return folder


def test_readers_are_refused_while_a_train_holds_the_folder(run_dir):
    with run_lock(run_dir):  # a train writing this folder (this process's pid is in the lock file)
        for read in (
            lambda: evaluate_run(run_dir),
            lambda: sample_run(run_dir, None, 4),
            lambda: diagnose([str(run_dir)], DiagnoseOptions(num_samples=30, nuts_points=0)),
        ):
            with pytest.raises(PyroLVMError, match=rf"being written by a pyro-lvm train \(pid {os.getpid()}\)") as e:
                read()
            assert "\n" not in str(e.value)
    assert not any((run_dir / name).exists() for name in ("evaluation.json", "samples.png", "diagnostics.json"))
    evaluate_run(run_dir)  # the train is gone: the lock blocks nothing
    assert (run_dir / "evaluation.json").is_file() and not list(run_dir.glob("*.tmp"))


def test_readers_share_the_folder_and_a_writer_waits_for_them(run_dir):
    with read_lock(run_dir):  # another evaluate is under way
        evaluate_run(run_dir)  # readers do not block each other
        sample_run(run_dir, None, 4)
        more = tiny_config(train={"steps": 4, "checkpoint_every": 2})
        reader = "in use by a pyro-lvm evaluate, sample or diagnose reading it"  # not the last train's stale pid
        with pytest.raises(PyroLVMError, match=reader):
            train(Experiment.from_config(more), run_dir, resume=True)  # would replace the checkpoint being read
        with pytest.raises(PyroLVMError, match=reader):
            train(Experiment.from_config(more), run_dir, overwrite=True)  # would clear the folder being read
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["step"] == 2
    assert (run_dir / "evaluation.json").is_file()


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file.txt").write_text("a regular file")  # a folder below it fails for root too (ENOTDIR)
    with pytest.raises(PyroLVMError, match=r"cannot write the run folder .*file.txt/run") as info:
        train(Experiment.from_config(tiny_config(train={"steps": 2})), tmp_path / "file.txt" / "run")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(28, "No space left on device")])
def test_a_checkpoint_write_failing_mid_run_keeps_the_last_checkpoint(tmp_path, monkeypatch, error):
    save, calls = torch.save, {"n": 0}

    def failing_save(obj, f, *args, **kwargs):  # the second checkpoint fails after writing part of its file
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"half a checkpoint")
            raise error
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    cfg = tiny_config(train={"steps": 4, "checkpoint_every": 2})
    with pytest.raises(PyroLVMError, match=rf"could not write the checkpoint .*\({error.strerror}\); the previous"):
        train(Experiment.from_config(cfg), tmp_path)
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file is removed
    monkeypatch.setattr(checkpoint.torch, "save", save)
    assert checkpoint.load(tmp_path / CHECKPOINT)["step"] == 2  # the step-2 checkpoint, intact
