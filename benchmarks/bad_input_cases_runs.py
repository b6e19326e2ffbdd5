"""The corpus of ``bad_input_campaign.py``: run folders, faults and non-finite values (the other categories are in
``bad_input_cases.py``; helpers in ``bad_input_corpus.py``)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import numpy as np
from bad_input_corpus import (
    Case,
    arrays_case,
    checkpoint_step,
    config_case,
    edit_checkpoint,
    file_size_limit,
    finite_checkpoint,
    no_tmp_left,
    npy,
    toml,
    writes,
)
from bad_input_stops import kill_9_mid_run, signal_mid_run, stopped_then_resumed

LONG = toml({"train.steps": "100000000", "train.checkpoint_every": "1000000"})  # holds its folder for minutes


def _run_folders() -> list[Case]:
    r = "run folders"

    def run(name, argv, expect="refuse", contains="", **kw):
        return Case(r, name, argv, expect, contains, with_run=True, **kw)

    def drop(key):
        return lambda state: state.pop(key)

    def config_text(text):
        return writes({"run/config.toml": text})

    out = [
        run("a checkpoint missing 'rng' (resume)", ["train", "--resume", "run", "--set", "train.steps=4"],
            contains="lacks rng", setup=edit_checkpoint(drop("rng"))),
        run("a checkpoint missing 'model' (evaluate)", ["evaluate", "run"], contains="lacks model",
            setup=edit_checkpoint(drop("model"))),
        run("a checkpoint of garbage bytes", ["evaluate", "run"], contains="corrupt",
            setup=writes({"run/checkpoint.pt": b"garbage" * 50})),
        run("an empty checkpoint", ["sample", "run"], contains="corrupt", setup=writes({"run/checkpoint.pt": b""})),
        run("a truncated checkpoint", ["evaluate", "run"], contains="corrupt",
            setup=lambda f: (f / "run/checkpoint.pt").write_bytes((f / "run/checkpoint.pt").read_bytes()[:999])),
        run("a checkpoint holding pickled code", ["evaluate", "run"], contains="corrupt",
            setup=edit_checkpoint(lambda s: s.__setitem__("extra", argparse.Namespace(a=1)))),
        run("a checkpoint of another format", ["evaluate", "run"], setup=edit_checkpoint(drop("format"))),
        run("a checkpoint that is a folder", ["evaluate", "run"], setup=lambda f: (
            (f / "run/checkpoint.pt").unlink(), (f / "run/checkpoint.pt").mkdir())),
        run("a checkpoint with step = 'abc' (resume)", ["train", "--resume", "run", "--set", "train.steps=4"],
            setup=edit_checkpoint(lambda s: s.__setitem__("step", "abc"))),
        run("a checkpoint with a damaged history (resume)", ["train", "--resume", "run", "--set", "train.steps=4"],
            setup=edit_checkpoint(lambda s: s.__setitem__("history", [1, 2]))),
        run("only a leftover checkpoint.pt.tmp", ["evaluate", "run"], contains="no checkpoint", setup=lambda f: (
            (f / "run/checkpoint.pt").rename(f / "run/checkpoint.pt.tmp"))),
        run("a config.toml of garbage bytes", ["evaluate", "run"], setup=writes({"run/config.toml": b"\xff\x00"})),
        run("an empty config.toml (other widths)", ["evaluate", "run"], setup=config_text("")),
        run("no config.toml", ["sample", "run"], contains="not a run folder",
            setup=lambda f: (f / "run/config.toml").unlink()),
        run("config.toml with an unknown key", ["evaluate", "run"], contains="unknown",
            setup=config_text(toml({"train.stpes": "2"}))),
        run("another latent_dim without the checkpoint's identity", ["evaluate", "run"],
            setup=lambda f: (edit_checkpoint(drop("identity"))(f),
                             (f / "run/config.toml").write_text(toml({"model.latent_dim": "3"})))),
        run("resume with the data seed edited in config.toml", ["train", "--resume", "run", "--set",
            "train.steps=4"], contains="was trained with", setup=_edit_config(data={"seed": 5})),
        run("resume with train.steps below the checkpoint", ["train", "--resume", "run", "--set", "train.steps=1"],
            contains="beyond train.steps"),
        run("train CONFIG --resume RUN", ["train", "c.toml", "--resume", "run"], contains="drop"),
        run("resume with another latent_dim", ["train", "--resume", "run", "--set", "model.latent_dim=3", "--set",
            "train.steps=4"], contains="was trained with"),
        run("evaluate with another latent_dim", ["evaluate", "run", "--set", "model.latent_dim=3"],
            contains="was trained with"),
        run("evaluate with another likelihood", ["evaluate", "run", "--set", "likelihood.name=gaussian"]),
        run("resume to more steps", ["train", "--resume", "run", "--set", "train.steps=4"], "run",
            check=checkpoint_step(4)),
        run("resume with another lr", ["train", "--resume", "run", "--set", "train.steps=4", "--set",
            "optim.lr=0.01"], "run"),
        run("evaluate with more samples", ["evaluate", "run", "--set", "eval.num_samples=8"], "run"),
        run("evaluate with metrics.json garbage", ["evaluate", "run"], "run",
            setup=writes({"run/metrics.json": b"\x00garbage"})),
        run("evaluation.json is a folder", ["evaluate", "run"], setup=lambda f: (f / "run/evaluation.json").mkdir()),
        run("train into an existing run", ["train", "c.toml", "--set", "train.out_dir=run"],
            contains="already holds a run"),
        run("train --overwrite an existing run", ["train", "c.toml", "--set", "train.out_dir=run", "--overwrite"],
            "run"),
        Case(r, "train into a folder of other files", ["train", "c.toml", "--set", "train.out_dir=mine"],
             contains="not empty", setup=writes({"mine/notes.txt": "mine"})),
        run("resume a folder without a checkpoint", ["train", "--resume", "run"], contains="checkpoint",
            setup=lambda f: (f / "run/checkpoint.pt").unlink()),
        Case(r, "evaluate a missing folder", ["evaluate", "nowhere"], contains="not a run folder"),
        Case(r, "evaluate a file", ["evaluate", "c.toml"], contains="not a run folder"),
        Case(r, "evaluate ''", ["evaluate", ""]),
        run("sample --condition on a VAE", ["sample", "run", "--condition", "3"], contains="label CVAE"),
        run("diagnose a run and a garbage folder", ["diagnose", "run", "junk", "--nuts-points", "0"],
            setup=writes({"junk/config.toml": b"\xff"})),
        run("diagnose --out under a file", ["diagnose", "run", "--nuts-points", "0", "--num-samples", "30",
            "--out", "c.toml/out"]),
        Case(r, "resume ''", ["train", "--resume", ""]),
        Case(r, "resume a file", ["train", "--resume", "c.toml"], contains="not a run folder"),
        run("evaluate", ["evaluate", "run"], "run"),
        run("sample", ["sample", "run"], "run"),
        run("diagnose (PSIS only)", ["diagnose", "run", "--nuts-points", "0", "--num-samples", "50"], "run"),
        run("diagnose (one short NUTS chain)", ["diagnose", "run", "--nuts-points", "1", "--nuts-chains", "1",
            "--nuts-samples", "20", "--nuts-warmup", "20", "--num-samples", "50"], "run"),
    ]  # fmt: skip
    out += _plugin_cases(run)
    return out


PLUGIN = "helper_mod"


def _plant(folder: Path) -> None:
    """The run's config names a plugin module that sits in the folder the command runs in (as a run folder unpacked
    with a module beside it would) and writes MARKER when imported."""
    saved = folder / "run/config.toml"
    saved.write_text(saved.read_text().replace("plugins = []", f'plugins = ["{PLUGIN}"]'))
    (folder / f"{PLUGIN}.py").write_text("open('MARKER', 'w').write('imported')\n")


def _imported(expected: bool):
    def check(folder: Path) -> str | None:
        if (folder / "MARKER").exists() == expected:
            return None
        return (
            "the plugin beside the run was imported unasked" if not expected else "the allowed plugin was not imported"
        )

    return check


def _plugin_cases(run) -> list[Case]:
    """Opening a run folder runs none of its plugin code unasked (pyro_lvm/config/trust.py)."""
    refused = {
        "evaluate": ["evaluate", "run"],
        "sample": ["sample", "run"],
        "diagnose": ["diagnose", "run", "--nuts-points", "0"],
        "resume": ["train", "--resume", "run", "--set", "train.steps=4"],
    }
    out = [run(f"a plugin beside the run ({name})", argv, contains=f"--plugin {PLUGIN} (or --trust-plugins",
               setup=_plant, check=_imported(False)) for name, argv in refused.items()]  # fmt: skip
    out += [
        run("a plugin beside the run, --plugin given (evaluate)", ["evaluate", "run", "--plugin", PLUGIN], "run",
            setup=_plant, check=_imported(True)),
        run("a plugin beside the run, --trust-plugins (sample)", ["sample", "run", "--trust-plugins"], "run",
            setup=_plant, check=_imported(True)),
    ]  # fmt: skip
    return out


def _edit_config(**sections):
    def setup(folder: Path) -> None:
        import tomllib

        import tomli_w

        raw = tomllib.loads((folder / "run/config.toml").read_text())
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        (folder / "run/config.toml").write_text(tomli_w.dumps(raw))

    return setup


def _faults() -> list[Case]:
    f = "faults"
    busy = (["train", "long.toml", "--set", "train.out_dir=busy"], "busy/.lock")
    long = writes({"long.toml": LONG})
    out = [
        Case(f, "two trains into one folder at once", ["train", "c.toml", "--set", "train.out_dir=busy"],
             contains="in use by another pyro-lvm train (pid", setup=long, background=busy),
        Case(f, "--overwrite under a running train", ["train", "c.toml", "--set", "train.out_dir=busy",
             "--overwrite"], contains="in use", setup=long, background=busy,
             check=lambda d: None if (d / "busy" / "config.toml").exists() else "the running train's folder cleared"),
        Case(f, "resume under a running train", ["train", "--resume", "busy"], contains="in use", setup=long,
             background=busy),
        Case(f, "a stale lock file after kill -9", ["train", "c.toml", "--set", "train.out_dir=stale"], "run",
             setup=writes({"stale/.lock": "99999999"})),
        Case(f, ".lock is a folder", ["train", "c.toml", "--set", "train.out_dir=odd"],
             setup=lambda d: (d / "odd" / ".lock").mkdir(parents=True)),
        Case(f, "an output folder under a regular file", ["train", "c.toml", "--set", "train.out_dir=c.toml/run"],
             contains="cannot write"),
        Case(f, "an output folder in /proc", ["train", "c.toml", "--set", "train.out_dir=/proc/pyro_lvm_run"]),
        Case(f, "runs/ is a file", ["train", "c.toml"], setup=writes({"runs": "a file"})),
        Case(f, "a file-size limit during the checkpoint write", ["train", "c.toml"], contains="File too large",
             preexec=file_size_limit(16_000), check=no_tmp_left),
        Case(f, "a file-size limit of 100 bytes (the config)", ["train", "c.toml"], preexec=file_size_limit(100),
             check=no_tmp_left),
        Case(f, "a file-size limit during evaluation.json", ["evaluate", "run"], with_run=True,
             preexec=file_size_limit(300)),
        Case(f, "a file-size limit during sample's PNG", ["sample", "run", "--set", "eval.seed=3"], with_run=True,
             preexec=file_size_limit(2000)),
        Case(f, "kill -9 mid-run, then resume", ["train", "--resume", "run"], "run", setup=kill_9_mid_run,
             check=checkpoint_step(400)),
        *(Case(f, f"{signal.Signals(s).name} mid-run (before any checkpoint), then resume", ["train", "--resume",
                "run"], "run", setup=signal_mid_run(s), check=stopped_then_resumed)
          for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)),
        Case(f, "evaluate while a train holds the folder", ["evaluate", "busy"], setup=long,
             background=busy, contains="being written by a pyro-lvm train (pid"),
    ]  # fmt: skip
    return out


def _nan() -> list[Case]:
    n = "NaN"
    out = [
        config_case(n, "optim.lr = 1e6", {"optim.lr": "1e6", "train.steps": "60", "train.checkpoint_every": "20"},
                    contains="non-finite"),
        config_case(n, "optim.lr = 1e300", {"optim.lr": "1e300", "train.steps": "20"}, contains="float32 can hold"),
        config_case(n, "optim.lr = 1e6 in float64 (finite: runs)", {"optim.lr": "1e6", "train.steps": "60",
                    "train.dtype": '"float64"'}, "run", check=finite_checkpoint),
        config_case(n, "optim.lr = 1e6, per-datapoint guide (finite: runs)", {"optim.lr": "1e6", "optim.local_lr":
                    "1e6", "train.steps": "40", "guide.name": '"per_datapoint"', "guide.hidden": None}, "run",
                    check=finite_checkpoint),
        config_case(n, "optim.lr = inf", {"optim.lr": "inf"}),
        config_case(n, "optim.lr = nan", {"optim.lr": "nan"}),
        config_case(n, "optim.lr = -1", {"optim.lr": "-1.0"}),
        config_case(n, "optim.clip_norm = 0", {"optim.clip_norm": "0.0"}),
        config_case(n, "gaussian scale = 0", {"likelihood.name": '"gaussian"', "likelihood.scale": "0.0",
                    "data.binarize": '"none"'}),
        config_case(n, "gaussian scale = 1e-300", {"likelihood.name": '"gaussian"', "likelihood.scale": "1e-300",
                    "data.binarize": '"none"'}),
        config_case(n, "gaussian scale = inf", {"likelihood.name": '"gaussian"', "likelihood.scale": "inf",
                    "data.binarize": '"none"'}),
        arrays_case("NaN in the data", npy(np.full((60, 8), np.nan, dtype=np.float32)), contains="NaN", category=n),
        arrays_case("inf in the data", npy(np.full((60, 8), np.inf, dtype=np.float32)), category=n),
        Case(n, "a NaN parameter in the checkpoint (evaluate)", ["evaluate", "run"], contains="non-finite",
             with_run=True, setup=edit_checkpoint(_poison_model)),
        Case(n, "a NaN parameter in the checkpoint (sample)", ["sample", "run"], contains="non-finite",
             with_run=True, setup=edit_checkpoint(_poison_model)),
        Case(n, "a NaN parameter in the checkpoint (resume)", ["train", "--resume", "run", "--set",
             "train.steps=4"], contains="non-finite", with_run=True, setup=edit_checkpoint(_poison_model)),
        Case(n, "an inf Adam moment in the checkpoint (resume)", ["train", "--resume", "run", "--set",
             "train.steps=4"], contains="non-finite", with_run=True, setup=edit_checkpoint(_poison_moment)),
        Case(n, "an inf Adam moment in the checkpoint (evaluate)", ["evaluate", "run"], "run", with_run=True,
             setup=edit_checkpoint(_poison_moment)),
    ]  # fmt: skip
    return out


def _poison_model(state: dict) -> None:
    next(iter(state["model"].values())).view(-1)[0] = float("nan")


def _poison_moment(state: dict) -> None:
    import torch

    from pyro_lvm.runs.checkpoint import tensors

    name, t = next((k, v) for k, v in tensors(state["optim"]) if "exp_avg_sq" in k and torch.is_tensor(v))
    t.view(-1)[0] = float("inf")
