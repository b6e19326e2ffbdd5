"""Every distinct ``pyro-lvm`` command of README.md and docs/ runs, in page order, in one folder (so the run folders
that one command makes are there for the next), on a budget of seconds: the documented arguments as written, with
small-budget overrides appended (later ``--set`` values win) and Fashion-MNIST replaced by tiny IDX files."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
from test_docs import ROOT, commands, placeholder
from test_experiments import fake_idx_root

SMALL = ["train.steps=20", "train.progress=false", "data.max_train=120", "eval.num_samples=10", "eval.num_points=10"]
SMALL += ["compare.gap_points=5", "compare.qstar_max_steps=20", "compare.elbo_samples=5", "baseline.steps=20"]
DIAGNOSE = ["--num-points=2", "--num-samples=30", "--nuts-points=1", "--nuts-chains=1", "--nuts-samples=10"]
DIAGNOSE += ["--nuts-warmup=10"]


def runnable() -> list[str]:
    seen, out = set(), []
    for _, cmd in commands():
        args = shlex.split(cmd)
        if cmd not in seen and not any(placeholder(a) for a in args):
            seen.add(cmd)
            out.append(cmd)
    return out


@pytest.mark.slow
def test_every_documented_command_runs(tmp_path):
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    idx = fake_idx_root(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmds = runnable()
    assert len(cmds) >= 20 and "compare experiments/digits_compare.toml" in cmds  # the parser found them
    for cmd in cmds:
        args = shlex.split(cmd)
        if "train.mlflow=true" in cmd and importlib.util.find_spec("mlflow") is None:
            continue  # the optional extra (the dev extra has it); tests/test_mlflow.py says it is skipped
        if "train.device=cuda" in cmd and not torch.cuda.is_available():
            continue  # tests/test_gpu.py runs the CUDA commands on a GPU machine
        if args[0] in ("train", "compare"):
            extra = [*SMALL, *(["data.labelled=20"] if "m2" in cmd else [])]
            extra += [f"data.root={idx}", "eval.batch_size=16"] if "fashion" in cmd else []
            args += [f"--set={s}" for s in extra]
        elif args[0] == "diagnose":
            args += DIAGNOSE
        done = subprocess.run(
            [sys.executable, "-m", "pyro_lvm", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"pyro-lvm {cmd}: {done.stderr[-1500:]}"


def test_the_documented_components_run_as_plugins(tmp_path):
    """The Python blocks of "Your own components" (a prior and a guide), as written, saved as my_lvm.py: train,
    evaluate and compare (the guide against the built-in per-datapoint one) run with them."""
    page = (ROOT / "docs" / "howto" / "components.md").read_text()
    section = page.split("## Your own components")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    (tmp_path / "my_lvm.py").write_text("\n".join(blocks))
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    small = [f"--set={s}" for s in SMALL]
    for args in (
        ["train", "experiments/digits_vae.toml", "--plugin", "my_lvm", "--set=prior.name=laplace"]
        + ["--set=guide.name=shared_scale", "--set=train.out_dir=runs/mine", *small],
        ["evaluate", "runs/mine", "--plugin", "my_lvm"],  # my_lvm.py sits in the current folder: named to trust it
        ["compare", "experiments/digits_compare.toml", "--plugin", "my_lvm", *small]
        + ["--set=compare.guides=['shared_scale', 'per_datapoint']", "--set=compare.guide_options={}"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pyro_lvm", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"pyro-lvm {' '.join(args)}: {done.stderr[-1500:]}"
    assert re.search(r"^shared_scale\s+-\d", done.stdout, re.M)  # its row of the comparison table
