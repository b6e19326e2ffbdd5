"""GPU: ``--set train.device=cuda`` runs every command on the GPU, with the same numbers as on the CPU.

The CUDA tests are skipped, with the reason, where no CUDA device is present (this project's CI); run them on a GPU
machine with ``pytest tests/test_gpu.py``.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.guides import log_joint_per_datapoint
from pyro_lvm.infer.experiment import Experiment
from pyro_lvm.infer.train import train

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device, and none is present; run on a GPU machine"
)
REPO = Path(__file__).resolve().parent.parent
TINY = ["train.steps=30", "train.progress=false", "data.max_train=120", "eval.num_samples=20", "eval.num_points=20"]


def cli(*args, cwd):
    out = subprocess.run(
        [sys.executable, "-m", "pyro_lvm.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(PyroLVMError, match="no CUDA device is available; use train.device = 'cpu'"):
        Experiment.from_config(tiny_config(train={"device": "cuda"}))


@needs_cuda
@pytest.mark.parametrize(
    "sections",
    [
        [],
        ["guide.name=per_datapoint"],
        ["guide.name=semi_amortized", "elbo.jit=on"],
        ["model.name=cvae", "model.condition=label", "prior.name=conditional"],
        [
            "model.name=cvae",
            "model.condition=quadrants",
            "prior.name=conditional",
            "baseline.feed_prior=true",
            "baseline.steps=30",
        ],
    ],
)
def test_train_evaluate_sample_on_cuda(tmp_path, sections):
    sets = [f"--set={o}" for o in [*TINY, *sections, "train.device=cuda", f"train.out_dir={tmp_path / 'run'}"]]
    cli("train", "experiments/digits_vae.toml", *sets, cwd=REPO)
    cli("evaluate", str(tmp_path / "run"), cwd=REPO)
    label = ["--condition=3"] if "model.condition=label" in sections else []
    cli("sample", str(tmp_path / "run"), *label, cwd=REPO)


@needs_cuda
def test_compare_and_diagnose_on_cuda(tmp_path):
    sets = [
        f"--set={o}"
        for o in [
            *TINY,
            "train.device=cuda",
            "compare.gap_points=10",
            "compare.qstar_max_steps=50",
            "compare.elbo_samples=10",
            f"compare.out_dir={tmp_path / 'cmp'}",
        ]
    ]
    cli("compare", "experiments/digits_compare.toml", *sets, cwd=REPO)
    cli(
        "diagnose",
        str(tmp_path / "cmp" / "amortized"),
        "--num-points=4",
        "--num-samples=50",
        "--nuts-points=1",
        "--nuts-chains=2",
        "--nuts-samples=20",
        "--nuts-warmup=20",
        cwd=REPO,
    )


@needs_cuda
def test_cuda_log_joint_and_guide_equal_cpu():
    """The same parameters give the same log p(x, z | c) and q(z|x) on both devices (float64, fixed z)."""
    cfg = tiny_config(train={"dtype": "float64"})
    cpu = Experiment.from_config(cfg)
    gpu = Experiment.from_config(tiny_config(train={"dtype": "float64", "device": "cuda"}))
    gpu.model.load_state_dict(cpu.model.state_dict())
    gpu.guide.load_state_dict(cpu.guide.state_dict())
    x = cpu.data.train.x[:16]
    z = torch.randn(3, 16, cfg.model.latent_dim, dtype=torch.float64)
    a = log_joint_per_datapoint(cpu.model, x, None, z)
    b = log_joint_per_datapoint(gpu.model, x.cuda(), None, z.cuda())
    assert torch.allclose(a, b.cpu(), rtol=1e-10, atol=1e-10)
    for u, v in zip(cpu.guide.encode(x), gpu.guide.encode(x.cuda()), strict=True):
        assert torch.allclose(u, v.cpu(), rtol=1e-10, atol=1e-10)


@needs_cuda
def test_resume_on_cuda_restores_the_cuda_stream(tmp_path):
    over = {"train": {"device": "cuda", "steps": 40}}
    straight = Experiment.from_config(tiny_config(**over))
    train(straight, tmp_path / "a")
    first = Experiment.from_config(tiny_config(train={"device": "cuda", "steps": 20}))
    train(first, tmp_path / "b")
    resumed = Experiment.from_config(tiny_config(**over))
    train(resumed, tmp_path / "b", resume=True)
    for key, value in straight.model.state_dict().items():  # amortized dense nets: deterministic kernels
        assert torch.allclose(value, resumed.model.state_dict()[key], rtol=1e-5, atol=1e-6), key
