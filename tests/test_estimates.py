"""``evaluation/estimates.py`` piece by piece, each value against a reference written out here: the chunking of the
particles (recorded by the proposal), the defensive mixture's draws and density in the cases the gap tests do not
reach (more proposals than draws, one proposal, chunks that are not a multiple of the proposals), the guide's q of
a per-datapoint and an amortized guide, ``evaluate_split``'s random streams, conditions, per-datapoint rows, memory
check and several-ranks interleave (ranks simulated in one process), and the independent-pixel baseline (float64,
by hand). The mutation run (benchmarks/README.md) selects this file for the module."""

import math
from contextlib import nullcontext

import pyro.distributions as dist
import pytest
import torch
from helpers import linear_gaussian_experiment, scaled_posterior
from test_second_checks import _lg_log_joint

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation import estimates
from pyro_lvm.evaluation.estimates import (
    DefensiveMixture,
    batch_estimates,
    estimates_from_q,
    evaluate_split,
    guide_distribution,
    independent_baseline,
    mixture_log_px,
    particle_bytes,
    prior_proposal,
)
from pyro_lvm.guides.local import MIN_SCALE
from pyro_lvm.seeding import seeded, stream_seed


class Recording:
    """``q`` as a proposal that records the sample shapes asked of it: the chunks the particles are drawn in."""

    def __init__(self, q):
        self.q, self.shapes = q, []

    def sample(self, sample_shape):
        self.shapes.append(tuple(sample_shape))
        return self.q.sample(sample_shape)

    def log_prob(self, z):
        return self.q.log_prob(z)


def _chunks(k: int, chunk: int) -> list[int]:
    return [min(chunk, k - done) for done in range(0, k, chunk)]


def _hand_estimates(q, log_joint, k: int, chunk: int):
    """(logsumexp_k log w_k − log K, mean_k log w_k) from draws of q taken chunk by chunk, log w by ``log_joint``."""
    z = torch.cat([q.sample((n,)) for n in _chunks(k, chunk)])  # (K, B, D)
    lw = log_joint(z) - q.log_prob(z)
    return torch.logsumexp(lw, 0) - math.log(k), lw.sum(0) / k


def test_particles_are_drawn_in_chunks_of_chunk_size_with_1000_by_default():
    """K draws in chunks of at most chunk_size (default K = 1,000 in one chunk of 1,000; K = 1,500 in 1,000 + 500);
    the defensive mixture draws each chunk's share from each proposal (K = 20 in chunks of 7, 7, 6: 4 + 3, 3 + 4,
    3 + 3)."""
    lg, x, exp = linear_gaussian_experiment("amortized", 3)
    q = Recording(scaled_posterior(lg, x, 1.3))
    estimates_from_q(exp.model, q, x)
    assert q.shapes == [(1000,)]
    q = Recording(scaled_posterior(lg, x, 1.3))
    estimates_from_q(exp.model, q, x, None, 1500)
    assert q.shapes == [(1000,), (500,)]
    parts = [Recording(scaled_posterior(lg, x, 1.3)), Recording(scaled_posterior(lg, x, 0.9))]
    mixture_log_px(exp.model, parts, x)
    assert [p.shapes for p in parts] == [[(500,)], [(500,)]]
    parts = [Recording(scaled_posterior(lg, x, 1.3)), Recording(scaled_posterior(lg, x, 0.9))]
    mixture_log_px(exp.model, parts, x, None, 1500)
    assert [p.shapes for p in parts] == [[(500,), (250,)]] * 2
    parts = [Recording(scaled_posterior(lg, x, 1.3)), Recording(scaled_posterior(lg, x, 0.9))]
    mixture_log_px(exp.model, parts, x, None, 20, 7)
    assert [p.shapes for p in parts] == [[(4,), (3,), (3,)], [(3,), (4,), (3,)]]


def test_the_estimates_keep_the_data_dtype_whatever_the_default_dtype():
    """float32 data and model under a float64 default: log p̂ and ELBO come back in float32, equal to the hand
    reductions (float64) of the same float32 draws to float32 precision."""
    lg, x, exp = linear_gaussian_experiment("amortized", 6)
    q = scaled_posterior(lg, x, 1.3)
    q32 = dist.Normal(q.base_dist.loc.float(), q.base_dist.scale.float()).to_event(1)
    torch.set_default_dtype(torch.float64)  # conftest restores it
    torch.manual_seed(1)
    lp, elbo = estimates_from_q(exp.model.float(), q32, x.float(), None, 5, 2)
    assert lp.dtype == elbo.dtype == torch.float32
    torch.manual_seed(1)
    z = torch.cat([q32.sample((n,)) for n in (2, 2, 1)]).double()
    lw = _lg_log_joint(lg, x, z) - q.log_prob(z)
    assert torch.allclose(lp.double(), torch.logsumexp(lw, 0) - math.log(5), rtol=1e-5)
    assert torch.allclose(elbo.double(), lw.mean(0), rtol=1e-5)


def test_mixture_of_three_in_chunks_of_two_takes_draws_in_turn():
    """n = 3 proposals, K = 8 in chunks of 2 (chunk starts 0, 2, 4, 6 are not multiples of 3): draw j still comes
    from q_(j mod 3)."""
    qs = [dist.Normal(torch.full((1, 1), m, dtype=torch.float64), 1.0).to_event(1) for m in (0.0, 100.0, 200.0)]
    mix = DefensiveMixture(qs, 8)
    z = torch.cat([mix.sample((2,)) for _ in range(4)])[:, 0, 0]  # (8,)
    assert (z / 100).round().long().tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_mixture_with_more_proposals_than_draws_leaves_the_undrawn_one_out():
    """n = 3, K = 2: q3 gets no draw and weight 0, so m(z) = (q1 + q2) / 2, by hand, also where q3 is large."""
    qs = [dist.Normal(torch.full((1, 1), m, dtype=torch.float64), 1.0).to_event(1) for m in (0.0, 100.0, 200.0)]
    mix = DefensiveMixture(qs, 2)
    z = mix.sample((2,))[:, 0, 0]
    assert (z / 100).round().long().tolist() == [0, 1]
    point = torch.tensor([[200.0]], dtype=torch.float64)
    expected = torch.logsumexp(torch.stack([math.log(0.5) + q.log_prob(point) for q in qs[:2]]), 0)
    assert torch.allclose(mix.log_prob(point), expected, rtol=1e-12)


def test_mixture_of_one_proposal_is_that_proposal():
    """n = 1: the same draws as q's own from the same seed (in two chunks), and the same density."""
    q = dist.Normal(torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64), 0.7).to_event(1)
    mix = DefensiveMixture([q], 5)
    torch.manual_seed(3)
    z = torch.cat([mix.sample((3,)), mix.sample((2,))])
    torch.manual_seed(3)
    assert torch.equal(z, torch.cat([q.sample((3,)), q.sample((2,))]))
    assert z.dtype == torch.float64
    assert torch.equal(mix.log_prob(z), q.log_prob(z))


def test_mixture_log_px_passes_the_condition_to_the_model():
    """The learned-conditional-prior CVAE with its exact posterior (twice) as proposals: every weight is p(x | c),
    so log p̂(x | c) is the closed form."""
    from test_pinned_values import conditional_prior_cvae

    exp, x, c, exact, posterior = conditional_prior_cvae(n=12)
    assert torch.allclose(mixture_log_px(exp.model, [posterior, posterior], x, c, 6, 4), exact, atol=1e-9)


def test_guide_distribution_is_the_table_rows_or_the_encoder_output():
    """Per-datapoint guide: N(loc[idx], softplus(raw[idx]) + MIN_SCALE) for the rows idx, refused for a num_data
    other than its table's; amortized guide: N(encoder(x))."""
    _, x, exp = linear_gaussian_experiment("per_datapoint", 10)
    with torch.no_grad():
        exp.guide.raw_scale.weight.copy_(torch.linspace(-2.0, 2.0, 20, dtype=torch.float64).reshape(10, 2))
        exp.guide.loc.weight.copy_(torch.randn(10, 2, dtype=torch.float64))
    idx = torch.tensor([1, 4, 8])
    q = guide_distribution(exp.guide, x[idx], None, idx, 10)
    table_scale = torch.log1p(torch.exp(exp.guide.raw_scale.weight[idx])) + MIN_SCALE
    assert torch.equal(q.base_dist.loc, exp.guide.loc.weight[idx])
    assert torch.allclose(q.base_dist.scale, table_scale, rtol=1e-12, atol=0)
    with pytest.raises(PyroLVMError, match="holds 10 rows but num_data=11"):
        guide_distribution(exp.guide, x[idx], None, idx, 11)
    _, x, exp = linear_gaussian_experiment("amortized", 5)
    loc, scale = exp.guide.encode(x)
    q = guide_distribution(exp.guide, x)
    assert torch.equal(q.base_dist.loc, loc) and torch.equal(q.base_dist.scale, scale)


def test_batch_estimates_is_estimates_from_the_guides_q():
    """batch_estimates (defaults K = 1,000 in chunks of 1,000) equals estimates_from_q with the guide's q from the
    same seed (the guide's own draw of z included): a per-datapoint guide's rows idx (refused for a num_data other
    than its table's), and the CVAE's amortized guide with its condition c."""
    _, x, exp = linear_gaussian_experiment("per_datapoint", 10)
    idx = torch.tensor([0, 3, 7])
    for kwargs, (k, chunk) in (({}, (1000, 1000)), ({"num_samples": 1500}, (1500, 1000)), ({"num_samples": 7, "chunk_size": 3}, (7, 3))):  # fmt: skip
        torch.manual_seed(5)
        lp, elbo = batch_estimates(exp.model, exp.guide, x[idx], None, idx, 10, **kwargs)
        torch.manual_seed(5)
        q = guide_distribution(exp.guide, x[idx], None, idx, 10)
        ref_lp, ref_elbo = estimates_from_q(exp.model, q, x[idx], None, k, chunk)
        assert torch.equal(lp, ref_lp) and torch.equal(elbo, ref_elbo)
    with pytest.raises(PyroLVMError, match="holds 10 rows but num_data=11"):
        batch_estimates(exp.model, exp.guide, x[idx], None, idx, 11, num_samples=2)

    from test_pinned_values import conditional_prior_cvae

    exp, x, c, _, _ = conditional_prior_cvae(n=6)
    torch.manual_seed(6)
    lp, elbo = batch_estimates(exp.model, exp.guide, x, c, num_samples=5, chunk_size=2)
    torch.manual_seed(6)
    q = dist.Normal(*exp.guide.encode(x, c)).to_event(1)
    q.sample()  # the guide's own draw of z
    ref_lp, ref_elbo = estimates_from_q(exp.model, q, x, c, 5, 2)
    assert torch.allclose(lp, ref_lp, rtol=1e-12, atol=1e-12) and torch.allclose(elbo, ref_elbo, rtol=1e-12, atol=1e-12)


def _lg_reference(lg, exp, split, k, chunk, batch_size, seed, per_batch, num_data=None):
    """evaluate_split written out on the LG model: batches in order; one stream seeded by ``seed`` (or one per
    batch, seeded by (seed, "eval", i)); the guide's q of the batch; log w by hand; the hand reductions."""
    lps, elbos = [], []
    with seeded(seed):
        for i, start in enumerate(range(0, len(split), batch_size)):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            with seeded(stream_seed(seed, "eval", i)) if per_batch else nullcontext():
                xb = split.x[idx]
                q = guide_distribution(exp.guide, xb, None, idx if num_data else None, num_data)
                lp, elbo = _hand_estimates(q, lambda z, xb=xb: _lg_log_joint(lg, xb, z), k, chunk)
            lps.append(lp)
            elbos.append(elbo)
    return torch.cat(lps), torch.cat(elbos)


def test_evaluate_split_is_the_hand_reduction_on_one_stream_or_one_per_batch():
    """20 rows in batches of 7 (7, 7, 6), K = 5 in chunks of 2 (2, 2, 1): by default (seed 1) one stream for the
    split; with per_batch_streams one stream per batch, seeded by (seed, "eval", i); the values are those of the
    hand-written evaluation on the same streams. The proposal is handed every batch and drawn in those chunks."""
    lg, x, exp = linear_gaussian_experiment("amortized", 20)
    split = exp.data.test
    out = evaluate_split(exp.model, exp.guide, split, exp.condition, 5, 2, 7)
    lp, elbo = _lg_reference(lg, exp, split, 5, 2, 7, seed=1, per_batch=False)
    assert torch.allclose(out["log_px"].values, lp, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out["elbo"].values, elbo, rtol=1e-12, atol=1e-12)
    out = evaluate_split(exp.model, exp.guide, split, exp.condition, 5, 2, 7, seed=3, per_batch_streams=True)
    lp, elbo = _lg_reference(lg, exp, split, 5, 2, 7, seed=3, per_batch=True)
    assert torch.allclose(out["log_px"].values, lp, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out["elbo"].values, elbo, rtol=1e-12, atol=1e-12)
    seen = []

    def proposal(model, target, c):
        assert model is exp.model and c is None
        seen.append(Recording(scaled_posterior(lg, target, 1.3)))
        return seen[-1]

    evaluate_split(exp.model, exp.guide, split, exp.condition, 5, 2, 7, proposal=proposal)
    assert [r.shapes for r in seen] == [[(2,), (2,), (1,)]] * 3
    assert [r.q.base_dist.loc.shape[0] for r in seen] == [7, 7, 6]


def test_evaluate_split_reads_a_per_datapoint_guides_rows_and_refuses_it_without_num_data():
    """A per-datapoint guide on its training rows (num_data = N): the guide's q of each batch's rows, value for
    value; without num_data (rows of the split are not rows of the table) or with another N it is refused."""
    lg, x, exp = linear_gaussian_experiment("per_datapoint", 12)
    with torch.no_grad():
        exp.guide.loc.weight.copy_(scaled_posterior(lg, x, 1.0).base_dist.loc)
    split = exp.data.train
    out = evaluate_split(exp.model, exp.guide, split, exp.condition, 4, 3, 5, num_data=12, seed=2)
    lp, elbo = _lg_reference(lg, exp, split, 4, 3, 5, seed=2, per_batch=False, num_data=12)
    assert torch.allclose(out["log_px"].values, lp, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out["elbo"].values, elbo, rtol=1e-12, atol=1e-12)
    with pytest.raises(PyroLVMError, match="needs dataset indices"):
        evaluate_split(exp.model, exp.guide, split, exp.condition, 4, 3, 5)
    with pytest.raises(PyroLVMError, match="num_data=13"):
        evaluate_split(exp.model, exp.guide, split, exp.condition, 4, 3, 5, num_data=13)


def test_evaluate_split_passes_the_condition_to_the_guide_and_the_proposal():
    """The learned-conditional-prior CVAE, 12 rows in batches of 5: with its amortized guide, and with the prior
    p(z | c) as proposal, the values are the hand reduction of log w = log p(x | z, c) + log p(z | c) − log q,
    written with the model's own decoder, likelihood and prior on the same stream."""
    from test_pinned_values import conditional_prior_cvae

    exp, x, c, _, _ = conditional_prior_cvae(n=12)
    model = exp.model

    def log_joint(xb, cb, z):  # (K, B)
        k = z.shape[0]
        mean_x = model.decoder(torch.cat([z, cb.expand(k, -1, -1)], -1))
        return model.likelihood(mean_x).log_prob(xb) + model.prior_dist(cb).log_prob(z)

    for proposal in (None, prior_proposal):
        out = evaluate_split(model, exp.guide, exp.data.test, exp.condition, 4, 3, 5, proposal=proposal)
        lps, elbos = [], []
        with seeded(1), torch.no_grad():
            for start in range(0, 12, 5):
                xb, cb = x[start : start + 5], c[start : start + 5]
                if proposal is None:
                    q = guide_distribution(exp.guide, xb, cb)
                else:
                    q = model.prior_dist(cb).expand([xb.shape[0]])
                lp, elbo = _hand_estimates(q, lambda z, xb=xb, cb=cb: log_joint(xb, cb, z), 4, 3)
                lps.append(lp)
                elbos.append(elbo)
        assert torch.allclose(out["log_px"].values, torch.cat(lps), rtol=1e-12, atol=1e-12)
        assert torch.allclose(out["elbo"].values, torch.cat(elbos), rtol=1e-12, atol=1e-12)


def test_evaluate_split_checks_the_memory_of_a_chunk_of_a_batch(monkeypatch):
    """The memory check is asked for chunk × min(batch, N) × particle_bytes on the data's device, naming both
    settings and what to lower (20 rows: a batch of 64 is 20 rows)."""
    _, _, exp = linear_gaussian_experiment("amortized", 20)
    asked = []
    monkeypatch.setattr(estimates, "require", lambda *args: asked.append(args))
    split = exp.data.test
    evaluate_split(exp.model, exp.guide, split, exp.condition, 3, 3, 64)
    evaluate_split(exp.model, exp.guide, split, exp.condition, 3, 2, 7)
    per_particle = particle_bytes(exp.model, split.x)
    assert asked == [
        (
            3 * 20 * per_particle,
            "importance sampling with eval.chunk_size = 3 particles for eval.batch_size = 64 points",
            "lower eval.chunk_size or eval.batch_size (the estimate is the same; memory is chunk x batch)",
            split.x.device,
        ),
        (
            2 * 7 * per_particle,
            "importance sampling with eval.chunk_size = 2 particles for eval.batch_size = 7 points",
            "lower eval.chunk_size or eval.batch_size (the estimate is the same; memory is chunk x batch)",
            split.x.device,
        ),
    ]


class _Gathered(Exception):
    pass


class _SimulatedRank:
    """Rank ``rank`` of ``size`` in one process: ``gather_all`` records this rank's value and hands back the other
    ranks' values from ``others`` (a first pass without them stops at the gather)."""

    def __init__(self, size, rank, others=None):
        self.size, self.rank, self.others, self.sent = size, rank, others, None

    def gather_all(self, value):
        self.sent = value
        if self.others is None:
            raise _Gathered
        return [value if r == self.rank else self.others[r] for r in range(self.size)]


@pytest.mark.parametrize("size", [2, 3])
def test_evaluate_split_on_several_ranks_is_the_one_process_per_batch_evaluation(size):
    """P simulated ranks, 20 rows in batches of 3 (7 batches): rank r evaluates batches r, r + P, ... on their own
    streams, and after the gather every rank holds the one-process per_batch_streams evaluation, row for row."""
    _, _, exp = linear_gaussian_experiment("amortized", 20)
    split = exp.data.test

    def evaluate(ranks=None, per_batch=False):
        return evaluate_split(
            exp.model, exp.guide, split, exp.condition, 4, 3, 3, seed=5, per_batch_streams=per_batch, ranks=ranks
        )

    reference = evaluate(per_batch=True)
    sent = []
    for r in range(size):
        rank = _SimulatedRank(size, r)
        with pytest.raises(_Gathered):
            evaluate(rank)
        sent.append(rank.sent)
    assert [len(s) for s in sent] == [len(range(r, 7, size)) for r in range(size)]
    for r in range(size):
        out = evaluate(_SimulatedRank(size, r, sent))
        assert torch.equal(out["log_px"].values, reference["log_px"].values)
        assert torch.equal(out["elbo"].values, reference["elbo"].values)


def test_independent_baseline_is_the_hand_written_smoothed_log_likelihood():
    """Per pixel, by hand in float64: a categorical over ``levels`` values with counts + 1 (values a hair off
    their level still count for it), a Bernoulli with mean (Σ x + 1) / (N + 2), a Gaussian with the training mean
    and sample standard deviation floored at 0.01 (one constant pixel)."""
    g = torch.Generator().manual_seed(0)
    levels = 5
    k_train = torch.randint(0, levels, (9, 3), generator=g)
    k_test = torch.randint(0, levels, (4, 3), generator=g)
    jitter = 1e-9 * torch.where(torch.arange(3) == 1, -1.0, 1.0).double()
    train, test = k_train.double() / (levels - 1) + jitter, k_test.double() / (levels - 1) - jitter
    expected = []
    for n in range(4):
        total = 0.0
        for p in range(3):
            counts = [1 + int((k_train[:, p] == v).sum()) for v in range(levels)]
            total += math.log(counts[int(k_test[n, p])] / sum(counts))
        expected.append(total)
    got = independent_baseline(train, test, binary=False, levels=levels)
    assert torch.allclose(got.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)

    b_train = torch.randint(0, 2, (9, 3), generator=g).double()
    b_test = torch.randint(0, 2, (4, 3), generator=g).double()
    expected = []
    for n in range(4):
        total = 0.0
        for p in range(3):
            mean = (float(b_train[:, p].sum()) + 1) / (9 + 2)
            total += math.log(mean if b_test[n, p] == 1 else 1 - mean)
        expected.append(total)
    got = independent_baseline(b_train, b_test, binary=True)
    assert torch.allclose(got.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)

    r_train = torch.randn(9, 3, generator=g, dtype=torch.float64)
    r_train[:, 2] = 0.25  # a constant pixel: its deviation is floored
    r_test = torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.01 + 0.25
    expected = []
    for n in range(4):
        total = 0.0
        for p in range(3):
            col = [float(v) for v in r_train[:, p]]
            mean = sum(col) / 9
            sd = max(math.sqrt(sum((v - mean) ** 2 for v in col) / 8), 0.01)
            total += -0.5 * ((float(r_test[n, p]) - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)
        expected.append(total)
    got = independent_baseline(r_train, r_test, binary=False)
    assert torch.allclose(got.values, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    assert got.as_dict()["n"] == 4
