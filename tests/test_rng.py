"""The caller's random stream: ``seeded`` blocks and the evaluations that use them hand it back untouched, and a
resumed run restores the stream of its checkpoint whatever the caller drew or reseeded in between."""

import pyro.distributions as dist
import pytest
import torch
from helpers import tiny_config
from test_m2 import m2_experiment

import pyro_lvm
from pyro_lvm.evaluation.estimates import evaluate_split, mean_elbo, plain_validation_elbo, posterior_mean
from pyro_lvm.evaluation.labels import evaluate_labels
from pyro_lvm.seeding import replayed, rng_state, seeded
from pyro_lvm.training.experiment import Experiment


def _draws_after(block) -> torch.Tensor:
    """Seed the caller's stream, run ``block`` (which may draw), then draw 16 normals."""
    torch.manual_seed(5)
    torch.randn(3)  # the caller is somewhere in its stream, not at its seed
    block()
    return torch.randn(16)


def _nothing() -> None:
    return None


def test_a_seeded_block_hands_the_stream_back_untouched():
    """Draws after ``seeded(s)`` (s given or None) equal the draws with no block at all; inside, ``seeded(s)`` is
    the stream of ``torch.manual_seed(s)``, and ``seeded(None)`` continues the caller's stream."""
    reference = _draws_after(_nothing)

    def draw_a_lot(seed):
        def block():
            with seeded(seed):
                torch.randn(1000)

        return block

    for seed in (3, None):
        assert torch.equal(_draws_after(draw_a_lot(seed)), reference), seed
    torch.manual_seed(3)
    expected = torch.randn(50)
    torch.manual_seed(99)
    with seeded(3):
        assert torch.equal(torch.randn(50), expected)
    torch.manual_seed(8)
    expected = torch.randn(5)
    torch.manual_seed(8)
    with seeded():
        assert torch.equal(torch.randn(5), expected)


def test_replayed_redraws_and_hands_back():
    """``replayed(state)`` draws what was drawn from ``state``; after it the caller's stream is where it was."""
    torch.manual_seed(1)
    state = rng_state()
    first = torch.randn(20)
    torch.randn(7)
    after = torch.randn(20)
    torch.manual_seed(1)
    torch.randn(20)
    torch.randn(7)  # the caller is past the 20 draws that the block redraws
    with replayed(state):
        assert torch.equal(torch.randn(20), first)
    assert torch.equal(torch.randn(20), after)


@pytest.mark.parametrize("per_batch", [False, True])
def test_evaluation_and_validation_leave_the_training_stream_alone(per_batch):
    """evaluate_split, mean_elbo (the validation curve) and plain_validation_elbo draw (their values depend on the seed)
    and the caller's next draws are those it would have made without them."""
    exp = Experiment.from_config(tiny_config())
    split = exp.data.val

    def evaluate(seed=1):
        return evaluate_split(
            exp.model, exp.guide, split, exp.condition, 5, 5, 16, num_points=40, seed=seed, per_batch_streams=per_batch
        )["log_px"].values

    reference = _draws_after(_nothing)
    assert not torch.equal(evaluate(1), evaluate(2))  # the block really draws
    for block in (
        evaluate,
        lambda: mean_elbo(exp.model, exp.guide, split, exp.condition),
        lambda: plain_validation_elbo(exp),
    ):
        assert torch.equal(_draws_after(block), reference)


def test_m2_evaluation_and_posterior_means_leave_the_training_stream_alone():
    """The label-summed evaluation (M2's validation curve) and the sampled posterior mean of a family without a
    closed-form mean (a transformed Normal) draw on their own streams."""
    exp = m2_experiment()
    reference = _draws_after(_nothing)
    assert torch.equal(_draws_after(lambda: exp.recipe.validation(exp)(exp)), reference)
    assert torch.equal(_draws_after(lambda: evaluate_labels(exp.model, exp.guide, exp.data.val, 2, 2, 50)), reference)
    q = dist.TransformedDistribution(dist.Normal(torch.zeros(4, 2), 1.0), [dist.transforms.ExpTransform()])
    assert torch.equal(_draws_after(lambda: posterior_mean(q, 64, seed=2)), reference)
    assert torch.allclose(posterior_mean(q, 64, seed=2), posterior_mean(q, 64, seed=2))


def _params(exp) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in {**exp.model.state_dict(), **exp.guide.state_dict()}.items()}


@pytest.mark.parametrize("between", ["reseed", "draw"])
def test_resume_restores_the_stream_whatever_the_caller_did_in_between(tmp_path, between):
    """10 steps, then the caller reseeds torch (or draws), then resume to 20 == 20 steps in one go, tensor for
    tensor: the stream the second half draws from is the checkpoint's, not the caller's."""
    over = {"data": {"max_train": 100}, "train": {"checkpoint_every": 10, "eval_every": 10}}

    def experiment(steps):
        cfg = tiny_config(**{**over, "train": {**over["train"], "steps": steps}})
        return Experiment.from_config(cfg)

    straight = experiment(20)
    pyro_lvm.train(straight, tmp_path / "a", figures=False)
    pyro_lvm.train(experiment(10), tmp_path / "b", figures=False)
    if between == "reseed":
        torch.manual_seed(12345)
    else:
        torch.randn(1000)
    resumed = experiment(20)
    pyro_lvm.train(resumed, tmp_path / "b", resume=True, figures=False)
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
