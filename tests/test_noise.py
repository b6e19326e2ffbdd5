"""The traced step with its draws as inputs (pyro_lvm/infer/noise.py): the same numbers as the one-piece graph for
every built-in model, guide and objective, and mapped over replicas with torch.func.vmap, each replica's loss and
gradients those of its own single step (float64)."""

from __future__ import annotations

import pyro
import pytest
import torch
from test_pure_step import CASES, experiment

from pyro_lvm.context import scope
from pyro_lvm.infer.noise import NoiseError, lift_noise
from pyro_lvm.infer.pure import PureStep


def traced(exp, step: int = 0):
    batch = exp.recipe.batches(exp).batch(step)
    target, c = exp.condition(batch.x, batch.y)
    pure = PureStep(exp.elbo, exp.model, exp.guide)
    beta = torch.tensor(0.7, dtype=torch.float64)
    n = len(exp.data.training_rows)
    return pure, pure.trace(target, c, batch.idx, n, beta), (target, c, batch.idx, beta)


def dense(g):
    return None if g is None else (g.to_dense() if g.is_sparse else g)


LIFTABLE = sorted(set(CASES) - {"m2-trace"})  # M2 under trace draws y from q(y|x): a draw from computed probabilities


@pytest.mark.parametrize("case", LIFTABLE)
def test_lifted_noise_gives_the_one_piece_graph_numbers(case):
    exp = experiment(CASES[case])
    with scope(validation=False):
        pure, graph, (x, c, idx, beta) = traced(exp)
        pyro.set_rng_seed(5)
        loss, grads = graph(pure.params, pure.state, x, c, idx, beta)
        after = torch.rand(())
        lifted = lift_noise(graph)
        pyro.set_rng_seed(5)
        noise = lifted.draw()
        assert torch.rand(()) == after  # draw() consumed the stream exactly as the graph did
        loss2, grads2 = lifted.step(pure.params, pure.state, x, c, idx, beta, noise=noise)
    assert torch.equal(loss, loss2)
    for a, b in zip(grads, grads2, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(dense(a), dense(b))


@pytest.mark.parametrize(
    "case", ["vae-amortized-trace", "cvae-label-conditional-prior", "vae-renyi-iwae", "mog-prior", "amortized_flow"]
)
def test_replicas_mapped_with_vmap_equal_their_single_steps(case):
    """Three replicas (seeds 0, 1, 2: their own initial parameters, buffers such as the flow's masks, batches and
    noise streams) in one vmapped call: each replica's loss and gradients are its single step's to 1e-10 (batched
    matrix products round differently)."""
    exps = [experiment(CASES[case] | {"train": {"seed": s}}) for s in range(3)]
    with scope(validation=False):
        pures, inputs, noises, singles = [], [], [], []
        for r, exp in enumerate(exps):
            pure, graph, args = traced(exp, step=r)
            lifted = lift_noise(graph)
            pyro.set_rng_seed(100 + r)
            noise = lifted.draw()
            singles.append(lifted.step(pure.params, pure.state, *args, noise=noise))
            pures.append(pure)
            inputs.append(args)
            noises.append(noise)
        params = [torch.stack(ps) for ps in zip(*(p.params for p in pures), strict=True)]
        state = [torch.stack(ts) for ts in zip(*(p.state for p in pures), strict=True)]
        x, c, idx = (None if ts[0] is None else torch.stack(ts) for ts in list(zip(*inputs, strict=True))[:3])
        noise = tuple(torch.stack(n) for n in zip(*noises, strict=True))
        beta = inputs[0][3]

        def one(ps, st, x, c, idx, eps):
            return lifted.step(ps, st, x, c, idx, beta, noise=eps)

        dims = (0, 0, 0, None if c is None else 0, 0, 0)
        loss, grads = torch.func.vmap(one, in_dims=dims)(params, state, x, c, idx, noise)
    for r, (loss_r, grads_r) in enumerate(singles):
        assert torch.allclose(loss[r], loss_r, rtol=1e-10, atol=0)
        for a, b in zip(grads, grads_r, strict=True):
            if b is not None:
                assert torch.allclose(a[r], b, rtol=1e-10, atol=1e-10)


def test_a_draw_that_depends_on_the_inputs_cannot_be_lifted():
    exp = experiment(CASES["m2-trace"])  # y ~ q(y|x) by multinomial: its probabilities are computed from x
    with scope(validation=False), pytest.raises(NoiseError, match="multinomial.* depends on the step's inputs"):
        lift_noise(traced(exp)[1])
