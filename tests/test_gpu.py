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
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

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


@needs_cuda
def test_m2_train_evaluate_sample_on_cuda(tmp_path):
    """M2 on the GPU: enumerated labels (TraceEnum_ELBO), the labelled/unlabelled batches and the label report."""
    run = tmp_path / "m2"
    sets = [f"--set={o}" for o in [*TINY, "data.labelled=20", "train.device=cuda", f"train.out_dir={run}"]]
    cli("train", "experiments/digits_m2.toml", *sets, cwd=REPO)
    out = cli("evaluate", str(run), cwd=REPO)
    assert "accuracy" in out.stdout
    cli("sample", str(run), "--condition=7", cwd=REPO)


def _close_states(a: dict, b: dict, rel: float) -> None:
    for part in ("model", "guide"):
        for key, x in a[part].items():
            if x.is_floating_point() and x.numel():
                err = float((x - b[part][key]).abs().max() / x.abs().max().clamp_min(1e-300))
                assert err <= rel, (part, key, err)


def _cuda_reference(tmp_path, chunks: int) -> tuple[list[str], dict]:
    """The one-process float64 run on CUDA with ``chunks`` chunks per step, and the settings it ran with."""
    from pyro_lvm import config
    from pyro_lvm.runs import checkpoint
    from pyro_lvm.runs.files import CHECKPOINT

    sets = [*TINY, "train.device=cuda", "train.dtype=float64", "train.batch_size=32"]
    cfg = config.load(REPO / "experiments" / "digits_vae.toml", [*sets, f"train.micro_batches={chunks}"])
    train(Experiment.from_config(cfg), tmp_path / "one")
    return sets, checkpoint.load(tmp_path / "one" / CHECKPOINT)


@needs_cuda
def test_an_nccl_group_of_one_rank_follows_the_one_process_run(tmp_path):
    """DDP's gradient hook and the float all-reduces over nccl (a group of one rank on this GPU; torchrun starts no
    group for one rank, and nccl refuses two ranks on one GPU) end where the run without a group ends."""
    import torch.distributed as dist

    from pyro_lvm import config
    from pyro_lvm.runs import checkpoint
    from pyro_lvm.runs.files import CHECKPOINT
    from pyro_lvm.training.strategies import ddp as distributed

    sets, one = _cuda_reference(tmp_path, 2)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed.Ranks().active and distributed.Ranks().sum([1.5, 2.0]) == [1.5, 2.0]
        cfg = config.load(REPO / "experiments" / "digits_vae.toml", [*sets, "train.micro_batches=2"])
        train(Experiment.from_config(cfg), tmp_path / "group")
    finally:
        dist.destroy_process_group()
    _close_states(one, checkpoint.load(tmp_path / "group" / CHECKPOINT), 1e-8)


@needs_cuda
def test_two_nccl_ranks_follow_the_one_process_run(tmp_path):
    """``pyro-lvm train --nproc 2`` on CUDA: one GPU per rank, the same end as two chunks per step in one process."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA devices, {torch.cuda.device_count()} present")
    from pyro_lvm.runs import checkpoint
    from pyro_lvm.runs.files import CHECKPOINT

    sets, one = _cuda_reference(tmp_path, 2)
    job = [f"--set={o}" for o in [*sets, f"train.out_dir={tmp_path / 'job'}"]]
    cli("train", "experiments/digits_vae.toml", "--nproc", "2", *job, cwd=REPO)
    _close_states(one, checkpoint.load(tmp_path / "job" / CHECKPOINT), 1e-8)
    cli("evaluate", str(tmp_path / "job"), "--nproc", "2", "--num-points", "20", cwd=REPO)


def _step_run(step: str, run_dir=None, steps: int = 14, resume: bool = False, **sections):
    train_opts = {"device": "cuda", "dtype": "float64", "steps": steps, "kl_warmup_steps": 3, "eval_every": 5}
    train_opts |= {"checkpoint_every": 7, "pyro_validation": False, "step": step}
    exp = Experiment.from_config(tiny_config(train=train_opts, elbo={"jit": "off"}, **sections))
    return exp, train(exp, run_dir, resume=resume)


def _params(exp):
    return [p.detach().cpu() for m in (exp.model, exp.guide) for p in m.parameters()]


@needs_cuda
@pytest.mark.parametrize("step", ["traced", "compiled", "graph"])
@pytest.mark.parametrize(
    "sections", [{}, {"model": {"name": "cvae", "condition": "label"}, "prior": {"name": "conditional"}}]
)
def test_pure_compiled_and_graph_steps_follow_the_eager_step_on_cuda(step, sections):
    """14 steps (3 of KL warm-up, a short last batch: two graphs) in float64: the same draws and the same updates
    as the eager step (the capturable Adam and inductor's fusions round differently: 1e-9)."""
    eager, h_eager = _step_run("eager", **sections)
    other, h_other = _step_run(step, **sections)
    for a, b in zip(h_other, h_eager, strict=True):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-9)
    for a, b in zip(_params(other), _params(eager), strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@needs_cuda
def test_a_graph_run_resumes_exactly_on_cuda(tmp_path):
    whole, _ = _step_run("graph", tmp_path / "whole")
    _step_run("graph", tmp_path / "halves", steps=7)
    resumed, _ = _step_run("graph", tmp_path / "halves", resume=True)
    for a, b in zip(_params(resumed), _params(whole), strict=True):
        assert torch.equal(a, b)


@needs_cuda
def test_graph_step_cli_run_on_cuda(tmp_path):
    sets = [f"--set={o}" for o in [*TINY, "train.device=cuda", "train.step=graph", f"train.out_dir={tmp_path / 'r'}"]]
    out = cli("train", "experiments/digits_vae.toml", *sets, cwd=REPO)
    assert "taking eager steps" not in out.stderr
    cli("evaluate", str(tmp_path / "r"), cwd=REPO)
