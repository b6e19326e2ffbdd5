"""Memory checks before allocating: the device a request lands on (host RAM, or a CUDA device's own memory), and
the estimates of diagnose (PSIS draws, NUTS chains) and compare (q* blocks, estimate batches). Machines are small
by monkeypatching: each refusal is one line naming the estimate, the limit and the key to lower."""

import pytest
import torch
from helpers import tiny_config

from pyro_lvm import config, resources
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training import experiment
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.run import train

GiB = 2**30


def test_a_cuda_request_is_checked_against_the_gpu_not_the_host(monkeypatch):
    monkeypatch.setattr(resources, "physical_memory", lambda: 4 * GiB)  # a small host
    monkeypatch.setattr(resources, "gpu_memory", lambda device: (60 * GiB, 80 * GiB))  # a large, mostly free GPU
    resources.require(10 * GiB, "a request", "lower it", torch.device("cuda:0"))  # fits the GPU, not the host
    with pytest.raises(PyroLVMError, match=r"more than this machine can hold \(3.2 GiB"):
        resources.require(10 * GiB, "a request", "lower it", torch.device("cpu"))
    monkeypatch.setattr(resources, "gpu_memory", lambda device: (1 * GiB, 80 * GiB))  # others hold the rest
    with pytest.raises(PyroLVMError) as info:
        resources.require(2 * GiB, "a request", "lower it", "cuda:1")
    message = str(info.value)
    assert "more than the GPU (cuda:1) can hold (1.0 GiB free of 80.0 GiB); lower it" in message
    assert "\n" not in message


def test_the_experiment_check_uses_its_device(monkeypatch):
    seen = []
    monkeypatch.setattr(resources, "gpu_memory", lambda device: seen.append(device) or (GiB // 10, 80 * GiB))
    cfg = tiny_config(model={"hidden": [4000, 4000]})
    with pytest.raises(PyroLVMError, match=r"the GPU \(cuda:0\) can hold"):
        experiment._check_memory(cfg, 64, 0, 100, torch.float32, torch.device("cuda:0"))
    assert seen == [torch.device("cuda:0")]
    experiment._check_memory(cfg, 64, 0, 100, torch.float32, torch.device("cpu"))  # the host holds it


@pytest.mark.parametrize(
    ("sections", "parameters", "widths"),
    [
        # decoder (2 + 0) -> 16 -> 64, encoder 64 -> 16 -> 4; widths 64 + 2 + 16 + 16
        ({}, (3 * 16 + 17 * 64) + (65 * 16 + 17 * 4), 64 + 2 + 32),
        # a table of 100 rows (loc, scale of 2 dims) in place of the encoder; a mixture of 3 components
        (
            {"guide": {"name": "per_datapoint"}, "prior": {"name": "mog", "num_components": 3}},
            (3 * 16 + 17 * 64) + 2 * 100 * 2 + 3 * (2 * 2 + 1 + 64),
            64 + 2 + 16,
        ),
        # a label prior network 10 -> 8 -> 4 (its activations are not counted); the decoder sees (z, c)
        (
            {"model": {"name": "cvae", "condition": "label"}, "prior": {"name": "conditional", "hidden": [8]}},
            (13 * 16 + 17 * 64) + (75 * 16 + 17 * 4) + (11 * 8 + 9 * 4),
            64 + 2 + 32,
        ),
    ],
)
def test_the_estimate_sums_what_each_component_says_it_costs(monkeypatch, sections, parameters, widths):
    """(4 x parameters + activations) x bytes, activations = batch x particles x widths x 4; each component's part
    comes from the ``memory`` function its registration names."""
    asked = []
    monkeypatch.setattr(experiment, "require", lambda num_bytes, *_: asked.append(num_bytes))
    cfg = tiny_config(**sections)
    cond_dim = 10 if "model" in sections else 0
    experiment._check_memory(cfg, 64, cond_dim, 100, torch.float64, torch.device("cpu"))
    assert asked == [(4 * parameters + 32 * 1 * widths * 4) * 8]


@pytest.fixture
def run_dir(tmp_path):
    cfg = tiny_config(train={"steps": 2, "checkpoint_every": 2})
    train(Experiment.from_config(cfg), tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        ({"num_samples": 10**6, "nuts_points": 0}, "PSIS k-hat with --num-samples 1,000,000 draws for each of 20 rows"),
        ({"num_samples": 30, "nuts_chains": 64, "nuts_samples": 10**6}, "lower --nuts-samples, --nuts-chains"),
    ],
)
def test_diagnose_refuses_before_drawing(run_dir, monkeypatch, opts, words):
    from pyro_lvm.evaluation import diagnostics
    from pyro_lvm.studies import diagnose

    monkeypatch.setattr(resources, "physical_memory", lambda: 2**27)  # 128 MiB
    monkeypatch.setattr(diagnose, "prior_khat", lambda *a: pytest.fail("drew before checking"))
    monkeypatch.setattr(diagnostics, "nuts_reference", lambda *a: pytest.fail("ran NUTS before checking"))
    with pytest.raises(PyroLVMError, match=words) as info:
        diagnose.diagnose([str(run_dir)], diagnose.DiagnoseOptions(**opts))
    assert "needs about" in str(info.value) and "\n" not in str(info.value)
    assert not (run_dir / "diagnostics.json").exists()


def test_compare_refuses_a_qstar_block_before_training(tmp_path, monkeypatch):
    from pyro_lvm.studies import compare, gaps

    # the tiny model trains in ~0.2 MB; a q* block of 100 rows x 10 draws needs ~9 MB
    monkeypatch.setattr(resources, "physical_memory", lambda: 6 * 2**20)
    monkeypatch.setattr(compare, "_train_subprocess", lambda *a: pytest.fail("trained before checking"))
    cfg = tiny_config(eval={"chunk_size": 1, "batch_size": 1}, compare={"gap_points": 100})
    config.save(cfg, tmp_path / "c.toml")
    with pytest.raises(PyroLVMError, match=r"fitting q\* to 100 points at once .* lower compare.gap_points"):
        compare.compare(tmp_path / "c.toml", [f"compare.out_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()
    exp = Experiment.from_config(cfg)
    gaps.check_memory(config.with_overrides(cfg, ["compare.gap_points=2", "eval.num_points=2"]), exp.model,
                      exp.data.train.x)  # fmt: skip
    with pytest.raises(PyroLVMError, match="lower eval.chunk_size or eval.batch_size"):
        big = config.with_overrides(cfg, ["compare.gap_points=2", "eval.num_points=2", "eval.chunk_size=100000"])
        gaps.check_memory(big, exp.model, exp.data.train.x)
