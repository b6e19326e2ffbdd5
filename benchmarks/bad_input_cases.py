"""The corpus of ``bad_input_campaign.py``: configs, sizes, data files and CLI arguments, and ``all_cases`` (run
folders, faults and non-finite values are in ``bad_input_cases_runs.py``; helpers in ``bad_input_corpus.py``)."""

from __future__ import annotations

import os

import numpy as np
from bad_input_cases_runs import _faults, _nan, _run_folders
from bad_input_corpus import (
    Case,
    arrays_case,
    config_case,
    idx_files,
    npy,
    set_case,
    toml,
    writes,
)


def _config() -> list[Case]:
    c = "config"
    out = [
        Case(c, "a binary file as the config", ["train", "b.toml"], setup=writes({"b.toml": bytes(range(256))})),
        Case(c, "a UTF-16 config", ["train", "u.toml"], setup=writes({"u.toml": toml({}).encode("utf-16")})),
        Case(c, "TOML syntax error", ["train", "s.toml"], setup=writes({"s.toml": "[train\nsteps = 2\n"})),
        Case(c, "a duplicate key", ["train", "d.toml"], setup=writes({"d.toml": "[train]\nsteps = 2\nsteps = 3\n"})),
        Case(c, "an empty config file (zero bytes)", ["train", "e.toml"], contains="is empty",
             setup=writes({"e.toml": ""})),
        Case(c, "a config of comments and blank lines", ["train", "e.toml", "--set", "train.steps=2"],
             contains="is empty", setup=writes({"e.toml": "# my settings\n\n   \n# to do\n"})),
        Case(c, "the config is a folder", ["train", "."], contains="not found"),
        Case(c, "a missing config", ["train", "nope.toml"], contains="not found"),
        Case(c, "a config path under a file", ["train", "c.toml/x.toml"], contains="not found"),
        Case(c, "a section that is a value", ["train", "v.toml"], setup=writes({"v.toml": "train = 3\n"})),
        Case(c, "plugins = 3", ["train", "p.toml"], setup=writes({"p.toml": "plugins = 3\n" + toml({})})),
        Case(c, "a missing plugin", ["train", "c.toml", "--plugin", "no_such_plugin"], contains="not found"),
        Case(c, "a plugin that raises on import", ["train", "c.toml", "--plugin", "bad_plugin"],
             contains="bad_plugin", setup=writes({"bad_plugin.py": "raise RuntimeError('broken plugin')\n"})),
        Case(c, "a plugin with a syntax error", ["train", "c.toml", "--plugin", "syn_plugin"],
             contains="syn_plugin", setup=writes({"syn_plugin.py": "def (:\n"})),
    ]  # fmt: skip
    refused = {
        "negative widths in hidden": {"model.hidden": "[-5]"},
        "hidden = [0]": {"model.hidden": "[0]"},
        "hidden as a string": {"model.hidden": '"8"'},
        "a fractional width": {"guide.hidden": "[8.5]"},
        'train.steps = "20"': {"train.steps": '"20"'},
        "train.steps = true": {"train.steps": "true"},
        "train.steps = 1e4": {"train.steps": "1e4"},
        "train.steps = 0": {"train.steps": "0"},
        "train.steps = -1": {"train.steps": "-1"},
        "train.seed = 2**64": {"train.seed": "18446744073709551616"},
        "data.seed = 2**63 - 1": {"data.seed": "9223372036854775807"},
        "data.seed = -1": {"data.seed": "-1"},
        "batch_size = 0": {"train.batch_size": "0"},
        "checkpoint_every = 0": {"train.checkpoint_every": "0"},
        "eval_every = 0": {"train.eval_every": "0"},
        "kl_warmup_steps = -1": {"train.kl_warmup_steps": "-1"},
        "max_seconds = 0": {"train.max_seconds": "0"},
        "latent_dim = 0": {"model.latent_dim": "0"},
        "latent_dim = 2.5": {"model.latent_dim": "2.5"},
        "an unknown section": {"trian": {"steps": "2"}},
        "an unknown key": {"train.stpes": "2"},
        "an option of another prior": {"prior.num_components": "3"},
        "an unknown guide": {"guide.name": '"nonsense"'},
        "an unknown model": {"model.name": '"nonsense"'},
        "an unknown prior": {"prior.name": '"nonsense"'},
        "an unknown likelihood": {"likelihood.name": '"nonsense"'},
        "an unknown ELBO": {"elbo.name": '"nonsense"'},
        "an unknown optimiser": {"optim.name": '"nonsense"'},
        "an unknown dataset": {"data.name": '"nonsense"'},
        "dtype float16": {"train.dtype": '"float16"'},
        "device tpu": {"train.device": '"tpu"'},
        "device cuda without CUDA": {"train.device": '"cuda"'},
        "device cuda:7": {"train.device": '"cuda:7"'},
        "eval.num_samples = 0": {"eval.num_samples": "0"},
        "eval.chunk_size = -1": {"eval.chunk_size": "-1"},
        "val_fraction = 1": {"data.val_fraction": "1.0"},
        "test_fraction = 0": {"data.test_fraction": "0.0"},
        "max_train = 0": {"data.max_train": "0"},
        "data.root for digits": {"data.root": '"/tmp"'},
        "train.out_dir = '' (the current, non-empty folder)": {"train.out_dir": '""'},
        "num_particles = 0": {"elbo.num_particles": "0"},
        "a mixture prior with 0 components": {"prior.name": '"mog"', "prior.num_components": "0"},
    }
    one_class = {"data.name": '"linear_gaussian"', "data.binarize": '"none"', "likelihood.name": '"gaussian"',
                 "model.name": '"cvae"', "model.condition": '"label"'}  # fmt: skip
    out += [
        config_case(c, "a label CVAE on one class (linear_gaussian)", one_class, contains="at least 2 classes"),
        config_case(c, "a gaussian likelihood on statically binarized data", {"likelihood.name": '"gaussian"'},
                    contains="data.binarize = 'static'"),
        config_case(c, "a gaussian likelihood on dynamically binarized data", {"likelihood.name": '"gaussian"',
                    "data.binarize": '"dynamic"'}, contains="data.binarize = 'dynamic'"),
    ]  # fmt: skip
    out += [config_case(c, name, changes) for name, changes in refused.items()]
    out += [
        config_case(c, "train.seed = 2**32 - 1", {"train.seed": "4294967295"}, "run"),
        config_case(c, "max_train = 1", {"data.max_train": "1"}, "run"),
        set_case(c, "--set guide.name=per_datapoint over encoder widths", ["guide.name=per_datapoint"], "run"),
        set_case(c, "--set without '='", ["train.steps"], contains="section.key=value"),
        set_case(c, "--set '=3'", ["=3"], contains="section.key"),
        set_case(c, "--set train..steps=3", ["train..steps=3"]),
        set_case(c, "--set train.steps=[", ["train.steps=["]),
        set_case(c, "--set train.steps=3 4", ["train.steps=3 4"]),
        set_case(c, "--set train.steps.x=3", ["train.steps.x=3"], contains="not a section"),
        set_case(c, "--set train.steps='20'", ["train.steps='20'"]),
        set_case(c, "--set model.hidden=[]", ["model.hidden=[]", "guide.hidden=[]"], "run"),
    ]
    return out


def _sizes() -> list[Case]:
    s = "sizes"
    out = [
        config_case(s, "latent_dim = 10**9", {"model.latent_dim": "1000000000"}),
        config_case(s, "a 10**8-wide layer", {"model.hidden": "[100000000]"}),
        config_case(s, "two 60,000-wide layers (57 GB)", {"model.hidden": "[60000, 60000]"}, contains="needs about"),
        config_case(s, "10**9 mixture components", {"prior.name": '"mog"', "prior.num_components": "1000000000"}),
        config_case(s, "10**8 particles", {"elbo.num_particles": "100000000"}),
        config_case(s, "batch_size = 10**9 (every row: a note)", {"train.batch_size": "1000000000"}, "note",
                    contains="train.batch_size = 1000000000 is more than the 100 training rows"),
        config_case(s, "batch_size = 100000 on the whole digits (a note)", {"train.batch_size": "100000",
                    "data.max_train": None}, "note", contains="train.batch_size = 100000 is more than the"),
        config_case(s, "max_train = 10**9 (all rows)", {"data.max_train": "1000000000"}, "run"),
        config_case(s, "micro_batches = 10**6", {"train.micro_batches": "1000000"}),
        config_case(s, "10**18 steps with max_seconds = 1", {"train.steps": "1000000000000000000",
                    "train.max_seconds": "1.0"}, "run"),  # fmt: skip
        Case(s, "sample --num 10**9", ["sample", "run", "--num", "1000000000"], with_run=True),
        Case(s, "sample --num 0", ["sample", "run", "--num", "0"], with_run=True),
        Case(s, "sample --rows 0", ["sample", "run", "--rows", "0"], with_run=True),
        Case(s, "sample --num 10,000", ["sample", "run", "--num", "10000"], "run", with_run=True),
        Case(s, "diagnose --num-points 0", ["diagnose", "run", "--num-points", "0"], with_run=True),
        Case(s, "evaluate --num-samples 0 writes nothing", ["evaluate", "run", "--num-samples", "0"], with_run=True,
             check=lambda d: "evaluation.json written" if (d / "run" / "evaluation.json").exists() else None),
        Case(s, "evaluate eval.chunk_size = 10**9", ["evaluate", "run", "--set", "eval.chunk_size=1000000000"],
             contains="eval.chunk_size", with_run=True),
        Case(s, "evaluate eval.num_points = 0", ["evaluate", "run", "--set", "eval.num_points=0"], with_run=True),
        Case(s, "evaluate --num-points 10**9 (all points)", ["evaluate", "run", "--num-points", "1000000000",
             "--num-samples", "2"], "run", with_run=True),  # fmt: skip
        Case(s, "evaluate eval.batch_size = 10**9", ["evaluate", "run", "--set", "eval.batch_size=1000000000"], "run",
             with_run=True),
        Case(s, "diagnose --num-samples 10**7 on 10**6 rows", ["diagnose", "run", "--num-samples", "10000000",
             "--num-points", "1000000", "--nuts-points", "0"], contains="--num-samples", with_run=True),
        Case(s, "diagnose NUTS 64 chains x 10**6 draws x 1000 rows", ["diagnose", "run", "--nuts-points", "1000",
             "--nuts-chains", "64", "--nuts-samples", "1000000"], contains="--nuts", with_run=True),
        Case(s, "compare with eval.chunk_size = 10**9", ["compare", "c.toml", "--set", "eval.chunk_size=1000000000",
             "--set", "compare.guides=['amortized']"], contains="eval.chunk_size"),
        Case(s, "compare with gap_points = 0", ["compare", "c.toml", "--set", "compare.gap_points=0"],
             contains="compare.gap_points"),
        Case(s, "compare with refine_ks = [-1]", ["compare", "c.toml", "--set", "compare.refine_ks=[-1]"]),
    ]  # fmt: skip
    return out


def _data() -> list[Case]:
    d = "data"
    rng = np.random.default_rng(1)
    good = idx_files()
    train_images = good["idx/train-images-idx3-ubyte.gz"]
    out = [
        Case(d, "valid IDX files", ["train", "c.toml"], "run", setup=writes(good)),
        Case(d, "a truncated .gz", ["train", "c.toml"], setup=writes(idx_files(
            train_images_idx3_ubyte=train_images[: len(train_images) // 2]))),
        Case(d, "a non-gzip .gz", ["train", "c.toml"], setup=writes(idx_files(train_labels_idx1_ubyte=b"plain"))),
        Case(d, "an empty .gz", ["train", "c.toml"], setup=writes(idx_files(t10k_images_idx3_ubyte=b""))),
        Case(d, "an IDX file with a wrong magic number", ["train", "c.toml"], setup=writes(idx_files(
            train_images_idx3_ubyte=gzip_idx(rng.integers(0, 256, (12, 28, 28)), bytes([1, 2, 3, 4]))))),
        Case(d, "images of the wrong size", ["train", "c.toml"], setup=writes(idx_files(
            train_images_idx3_ubyte=gzip_idx(rng.integers(0, 256, (12, 20, 20)))))),
        Case(d, "a label file of a different length", ["train", "c.toml"], setup=writes(idx_files(
            train_labels_idx1_ubyte=gzip_idx(rng.integers(0, 10, (3,)))))),
        Case(d, "labels beyond 0..9", ["train", "c.toml"], setup=writes(idx_files(
            train_labels_idx1_ubyte=gzip_idx(np.full(12, 200))))),
        Case(d, "an IDX header longer than its data", ["train", "c.toml"], setup=writes(idx_files(
            t10k_images_idx3_ubyte=gzip_idx(np.zeros((5, 28, 28)))[:-3] + b"\0\0\0"))),
        Case(d, "a missing IDX file", ["train", "c.toml"], setup=lambda f: (writes(good)(f),
             (f / "idx" / "t10k-labels-idx1-ubyte.gz").unlink())),
        Case(d, "an IDX file that is a folder", ["train", "c.toml"], setup=lambda f: (writes(good)(f),
             (f / "idx" / "t10k-labels-idx1-ubyte.gz").unlink(), (f / "idx" / "t10k-labels-idx1-ubyte.gz").mkdir())),
        Case(d, "data.root is missing", ["train", "c.toml", "--set", "data.root=nowhere"], setup=writes(good)),
        Case(d, "data.root is a file", ["train", "c.toml", "--set", "data.root=c.toml"], setup=writes(good)),
        Case(d, "mnist offline without its files", ["train", "c.toml", "--set", "data.name=mnist", "--set",
             "data.root=empty"], setup=lambda f: (f / "empty").mkdir()),
        arrays_case("random bytes as .npy", bytes(rng.integers(0, 256, 300, dtype=np.uint8))),
        arrays_case("an .npy magic then garbage", b"\x93NUMPY\x01\x00" + b"garbage" * 10),
        arrays_case("an object array", npy(np.array([[1, 2], [3]], dtype=object)), contains="object array"),
        arrays_case("an array of strings", npy(np.array(["a", "b", "c"]))),
        arrays_case("an array of zero rows", npy(np.zeros((0, 8), dtype=np.float32))),
        arrays_case("a 1-D array", npy(np.zeros(40, dtype=np.float32))),
        arrays_case("complex numbers", npy(np.zeros((40, 8), dtype=np.complex64))),
        arrays_case("valid floats in [0, 1]", npy(rng.random((60, 8)).astype(np.float32)), "run"),
        arrays_case("values outside [0, 1] under Bernoulli", npy(rng.normal(size=(60, 8)).astype(np.float32))),
        arrays_case("random bytes as .npz", b"PK\x03\x04" + b"x" * 100, suffix=".npz"),
        Case(d, "a missing .npy", ["train", "m.toml"], setup=writes({"m.toml": toml({"data": {
                "name": '"arrays"', "path": '"gone.npy"'}})}), contains="not found"),
        Case(d, "data.path is a folder", ["train", "m.toml"], setup=writes({"m.toml": toml({"data": {
            "name": '"arrays"', "path": '"."'}})})),
        Case(d, "labels of another length", ["train", "m.toml"], contains="rows", setup=writes({
            "x.npy": npy(rng.random((60, 8)).astype(np.float32)), "y.npy": npy(np.zeros(7, dtype=np.int64)),
            "m.toml": toml({"data": {"name": '"arrays"', "path": '"x.npy"', "labels": '"y.npy"',
                                     "binarize": '"none"'}})})),
        Case(d, "float labels", ["train", "m.toml"], contains="not integers", setup=writes({
            "x.npy": npy(rng.random((60, 8)).astype(np.float32)), "y.npy": npy(np.zeros(60)),
            "m.toml": toml({"data": {"name": '"arrays"', "path": '"x.npy"', "labels": '"y.npy"',
                                     "binarize": '"none"'}})})),
        Case(d, "negative labels", ["train", "m.toml"], contains="outside", setup=writes({
            "x.npy": npy(rng.random((60, 8)).astype(np.float32)), "y.npy": npy(-np.ones(60, dtype=np.int64)),
            "m.toml": toml({"data": {"name": '"arrays"', "path": '"x.npy"', "labels": '"y.npy"',
                                     "binarize": '"none"'}})})),
    ]  # fmt: skip
    return out


def gzip_idx(array: np.ndarray, magic: bytes | None = None) -> bytes:
    from bad_input_corpus import _idx

    return _idx(array, magic)


def _cli_args() -> list[Case]:
    a = "CLI args"
    refused = [
        [], ["trian"], ["train"], ["--nproc", "2"], ["train", "c.toml", "--nproc", "0"],
        ["train", "c.toml", "--nproc", "2000"], ["train", "c.toml", "--nproc", "abc"],
        ["evaluate", "run", "--num-samples", "-1"], ["evaluate", "run", "--num-samples", "1.5"],
        ["evaluate", "run", "--num-samples", "1000000000"], ["evaluate", "run", "--num-points", "0"],
        ["sample", "run", "--completions", "0"], ["sample", "run", "--rows", "1001"],
        ["diagnose", "run", "--nuts-chains", "0"], ["diagnose", "run", "--nuts-chains", "65"],
        ["diagnose", "run", "--nuts-samples", "0"], ["diagnose", "run", "--nuts-warmup", "-1"], ["diagnose"],
        ["train", "c.toml", "--set"], ["train", "c.toml", "--plugin", ""], ["evaluate", "run", "run"],
        ["train", "c.toml", "--foo"], ["sample", "run", "--condition", "abc"], ["evaluate"],
        ["train", "c.toml", "c.toml"], ["compare"], ["compare", "missing.toml"],
        ["compare", "c.toml", "--set", "compare.guides=['nonsense']"], ["compare", "c.toml", "--set",
        "compare.guides=[]"], ["train", "c.toml", "--set", "train.steps=2", "--set", "trian.steps=2"],
        ["evaluate", "run", "--set", "eval.num_samples=-5"], ["-x"], ["train", "--resume"],
    ]  # fmt: skip
    out = [Case(a, " ".join(argv) or "(no arguments)", argv, with_run=True) for argv in refused]
    runs = [["--version"], ["--help"], ["train", "--help"], ["evaluate", "-h"], ["train", "c.toml", "--overwrite"],
            ["train", "c.toml", "--set", "train.steps=3"], ["evaluate", "run", "--num-samples", "3"]]  # fmt: skip
    out += [Case(a, " ".join(argv), argv, "run", with_run=True) for argv in runs]
    return out


# Cases that repeat another's path through the code: left out so that the campaign stays within 15 minutes on a
# shared 2-core machine (each case starts a Python with torch; ~3.5 s for a refusal, ~10 s for a run).
REPEATS = {
    "a duplicate key", "the config is a folder", "hidden as a string", "train.steps = -1", "checkpoint_every = 0",
    "eval_every = 0", "kl_warmup_steps = -1", "an unknown model", "an unknown likelihood", "an unknown ELBO",
    "an unknown optimiser", "device cuda:7", "eval.chunk_size = -1", "test_fraction = 0", "num_particles = 0",
    "--set train..steps=3", "--set train.steps='20'", "data.seed = 2**63 - 1",
    "an empty .gz", "an IDX header longer than its data", "an array of strings", "a 1-D array", "an empty checkpoint",
    "a checkpoint that is a folder", "evaluate ''", "resume ''", "evaluate with more samples",
    "resume with another lr", "evaluate with metrics.json garbage", "max_seconds = 0", "latent_dim = 2.5",
    "an unknown section", "a section that is a value", "--set train.steps=[", "sample --rows 0",
    "evaluate eval.num_points = 0", "a checkpoint of another format", "resume a file", "config.toml with an unknown key",
    "gaussian scale = inf", "optim.lr = nan", "dtype float16", "a mixture prior with 0 components",
    "a UTF-16 config", "a config path under a file", "plugins = 3", "a plugin with a syntax error",
    "a fractional width", "train.steps = 0", "batch_size = 0", "an unknown prior", "device tpu", "val_fraction = 1",
    "an .npy magic then garbage", "negative labels", "float labels", "an empty config.toml (other widths)",
    "evaluate a file", "diagnose --out under a file", "max_train = 10**9 (all rows)", "sample --num 10,000",
}  # fmt: skip


def all_cases() -> list[Case]:
    every = [*_config(), *_sizes(), *_data(), *_run_folders(), *_faults(), *_nan(), *_cli_args()]
    return [c for c in every if c.name not in REPEATS]


if __name__ == "__main__":  # the corpus by category
    from collections import Counter

    print(Counter(c.category for c in all_cases()), len(all_cases()), os.getcwd())
