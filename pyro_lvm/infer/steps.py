"""One training step's loss and gradients: the plain step, or the step cut into chunks (``train.micro_batches``,
and the ranks of a distributed job, ``pyro_lvm.infer.distributed``).

Plain: the batch of B rows, one loss with plate scale N/B, noise from the training stream (torch's global RNG).

Chunked (M chunks): chunk k of step s is run on its own random stream, seeded by (train.seed, s, k), and its
gradients are accumulated, so the step's gradient is

    Σ_k ∇ w_k loss_k = (N / B) Σ_i ∇ℓ_i        (w_k = B_k / B, loss_k scaled N / B_k by the plate)

the plain step's gradient, with other noise: chunked runs equal plain runs in distribution, and a run with P ranks
equals the one-process run with ``micro_batches = P`` to rounding (the same chunks on the same streams; the ranks'
sum is the accumulation). Each chunk holds B/M rows' activations: less memory per step. Resume stays exact: the
streams depend on (seed, step, chunk) alone. A per-datapoint guide draws chunk k from part k of the rows (a
contiguous M-th), B/M rows per chunk with the stratified scale N_k / (B/M), so that rank k can keep part k's rows.
"""

from __future__ import annotations

import contextlib

import torch

from pyro_lvm.data import Batches, Split
from pyro_lvm.data.labelled import training_batches
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.infer import distributed
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.infer.experiment import Experiment
from pyro_lvm.seeding import replayed, rng_state, seeded, stream_seed


def bound_at_beta_one(exp: Experiment, rng, target, c, idx, n: int) -> float:
    """During KL warm-up: the bound at β = 1 per datapoint, −loss(β = 1) / N, from the same draws as the step's
    loss (the stream is replayed from before the step, then handed back, so training draws nothing extra)."""
    with replayed(rng), torch.no_grad():
        return -float(exp.elbo.differentiable_loss(exp.model, exp.guide, target, c, idx=idx, num_data=n)) / n


class PlainStep:
    """The batch of step s in one piece, on the training stream."""

    def __init__(self, exp: Experiment) -> None:
        cfg = exp.cfg.train
        self.exp, self.ranks = exp, distributed.Ranks()
        self.num_data = len(exp.data.training_rows)
        rows, labelled = exp.data.training_rows, exp.data.labelled  # scarce labels: labelled + unlabelled batches
        self.batches = training_batches(rows, labelled, cfg.batch_size, cfg.seed, exp.data.dynamic)

    def restorable(self, state: dict) -> dict:
        return state

    def gather(self, state: dict) -> dict | None:
        return state

    def __call__(self, step: int, beta: float) -> tuple[float, float]:
        """Loss of the step (gradients accumulated into ``.grad``) and the bound at β = 1 per datapoint."""
        exp, n = self.exp, self.num_data
        batch = self.batches.batch(step)
        target, c = exp.condition(batch.x, batch.y)
        rng = rng_state() if beta != 1.0 else None
        loss = loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=batch.idx, num_data=n, beta=beta)
        value = float(loss)
        return value, -value / n if rng is None else bound_at_beta_one(exp, rng, target, c, batch.idx, n)


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of step ``step``."""
    return stream_seed(seed, step, chunk)


class ChunkedStep:
    """The batch of step s in M chunks: this rank's M/P of them, accumulated; gradients summed over ranks."""

    def __init__(self, exp: Experiment) -> None:
        cfg = exp.cfg.train
        self.exp, self.ranks, self.seed = exp, distributed.Ranks(), cfg.seed
        rows = exp.data.training_rows
        self.tables = distributed.table_names(exp.guide)
        sharded = bool(self.tables)
        if sharded and self.ranks.size > 1 and getattr(exp.model, "baseline", None) is not None:
            raise PyroLVMError(  # each rank would fit the frozen NN baseline on its own part of the rows
                "a quadrant CVAE with a per-datapoint guide trains in one process: drop --nproc or use another guide"
            )
        self.num_data = int(self.ranks.sum([float(len(rows))])[0]) if sharded else len(rows)
        P = self.ranks.size
        M = cfg.micro_batches if cfg.micro_batches > 1 else P
        distributed.check(cfg.batch_size, self.num_data, P, cfg.micro_batches, sharded, cfg.device)
        self.chunks = range(self.ranks.rank * (M // P), (self.ranks.rank + 1) * (M // P))
        self.M, self.dynamic = M, exp.data.dynamic
        # sharded: one Batches per part of the rows held here, (part k, offset, plate size, weight)
        self.parts: list[tuple[Batches, int, int, float]] = []
        if sharded and P > 1:  # this rank's data is its part already (distributed.shard)
            self.parts = [(Batches(rows, cfg.batch_size // M, self._part_seed(self.ranks.rank)), 0, len(rows), 1.0)]
        elif sharded:
            for k, part in enumerate(distributed.parts(len(rows), M)):
                split = Split(rows.x[part.start : part.stop], rows.y[part.start : part.stop])
                batches = Batches(split, cfg.batch_size // M, self._part_seed(k))
                self.parts.append((batches, part.start, self.num_data, len(part) / self.num_data))
        # amortized: the plain run's batches, cut; sharded: part 0's batches (epochs are counted by them)
        self.batches = self.parts[0][0] if self.parts else Batches(rows, cfg.batch_size, cfg.seed)
        self.inner = distributed.ElboModule(exp.model, exp.guide, exp.elbo)
        self.module = distributed.wrap(self.inner, self.ranks)
        self.part_rows = distributed.parts(self.num_data, P)[self.ranks.rank]

    def _part_seed(self, k: int) -> int:
        # the shuffling of part k, apart from every step's noise (Batches multiplies it by ~1e6: kept below 2**40)
        return chunk_seed(self.seed, -1, k) % 2**40

    def _chunks(self, step: int):
        """(chunk, idx, x, y, plate size, weight) of this rank's chunks of step ``step``."""
        if self.parts:
            for k, (batches, offset, n, weight) in zip(self.chunks, self.parts, strict=True):
                b = batches.batch(step)
                yield k, b.idx + offset, b.x, b.y, n, weight
            return
        epoch, pos = divmod(step, self.batches.steps_per_epoch)
        size = self.batches.batch_size
        idx = self.batches.order(epoch)[pos * size : (pos + 1) * size]
        split = self.batches.split
        for k in self.chunks:
            part = idx.tensor_split(self.M)[k]
            yield k, part, split.x[part], split.y[part], self.num_data, len(part) / len(idx)

    def restorable(self, state: dict) -> dict:
        """A checkpoint's state cut to this rank's rows (sharded tables), else as it is."""
        if self.ranks.size == 1 or not self.tables:
            return state
        return distributed.slice_rows(state, self.tables, self.part_rows, self.num_data)

    def gather(self, state: dict) -> dict | None:
        """The state to write (rank 0: every rank's rows gathered), None on the other ranks."""
        if self.ranks.size == 1:
            return state
        if not self.tables:
            return state if self.ranks.lead else None
        return distributed.gather_rows(state, self.tables, self.ranks)

    def _loss(self, k, idx, x, y, n, weight, step, beta, last):
        with seeded(chunk_seed(self.seed, step, k)):
            x = torch.bernoulli(x) if self.dynamic else x
            target, c = self.exp.condition(x, y)
            ddp = self.module is not self.inner and not last
            with self.module.no_sync() if ddp else contextlib.nullcontext():
                loss = self.module(target, c, idx, n, beta, weight)
                if loss.requires_grad:
                    loss.backward()
        return float(loss.detach())

    @torch.no_grad()
    def _bound(self, k, idx, x, y, n, weight, step) -> float:
        with seeded(chunk_seed(self.seed, step, k)):  # the chunk's draws again, at β = 1
            x = torch.bernoulli(x) if self.dynamic else x
            target, c = self.exp.condition(x, y)
            return float(self.inner(target, c, idx, n, 1.0, weight))

    def __call__(self, step: int, beta: float) -> tuple[float, float]:
        """The step's loss summed over chunks and ranks (gradients accumulated) and the bound at β = 1 per datapoint."""
        value = bound = 0.0
        chunks = list(self._chunks(step))
        gone = distributed.lost_rank(self.ranks.rank) if self.ranks.size > 1 else contextlib.nullcontext()
        with gone:  # the all-reduce runs inside backward
            for j, chunk in enumerate(chunks):
                loss = self._loss(*chunk, step, beta, last=j == len(chunks) - 1)
                value += loss
                bound += loss if beta == 1.0 else self._bound(*chunk, step)
        value, bound = self.ranks.sum([value, bound])
        return value, -bound / self.num_data


def build(exp: Experiment) -> PlainStep | ChunkedStep:
    """The plain step for one process with ``micro_batches = 1``, the chunked one otherwise."""
    chunked = exp.cfg.train.micro_batches > 1 or distributed.Ranks().size > 1
    if chunked and getattr(exp.model, "label_latent", False):
        raise PyroLVMError(  # chunks cut the plain batch order; M2's labelled and unlabelled batches are not cut
            "the semi-supervised model m2 trains in one process with train.micro_batches = 1: drop --nproc"
        )
    return ChunkedStep(exp) if chunked else PlainStep(exp)
