"""The step cut into chunks: ``train.micro_batches`` in one process, and the ranks of a distributed job
(``pyro_lvm.training.strategies.ddp``).

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
from pyro_lvm.seeding import seeded, stream_seed
from pyro_lvm.training.strategies import ddp
from pyro_lvm.training.strategies.base import Strategy


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of step ``step``."""
    return stream_seed(seed, step, chunk)


class ChunkedStrategy(Strategy):
    """The batch of step s in M chunks: this rank's M/P of them, accumulated; gradients summed over ranks."""

    name = "chunked"

    def __init__(self, exp, recipe) -> None:
        super().__init__(exp, recipe)
        cfg = exp.cfg.train
        self.seed = cfg.seed
        rows = exp.data.training_rows
        sharded = exp.sharded  # per-datapoint rows: each rank keeps its part (decided once, by the experiment)
        self.tables = ddp.table_names(exp.guide) if sharded else []
        self.num_data = int(self.ranks.sum([float(len(rows))])[0]) if sharded else len(rows)
        P = self.ranks.size
        M = cfg.micro_batches if cfg.micro_batches > 1 else P
        ddp.check(cfg.batch_size, self.num_data, P, cfg.micro_batches, sharded)
        self.chunks = range(self.ranks.rank * (M // P), (self.ranks.rank + 1) * (M // P))
        self.M, self.dynamic = M, exp.data.dynamic
        # sharded: one Batches per part of the rows held here, (part k, offset, plate size, weight)
        self.parts: list[tuple[Batches, int, int, float]] = []
        if sharded and P > 1:  # this rank's data is its part already (ddp.shard)
            self.parts = [(Batches(rows, cfg.batch_size // M, self._part_seed(self.ranks.rank)), 0, len(rows), 1.0)]
        elif sharded:
            for k, part in enumerate(ddp.parts(len(rows), M)):
                split = Split(rows.x[part.start : part.stop], rows.y[part.start : part.stop])
                batches = Batches(split, cfg.batch_size // M, self._part_seed(k))
                self.parts.append((batches, part.start, self.num_data, len(part) / self.num_data))
        # amortized: the plain run's batches, cut; sharded: part 0's batches (epochs are counted by them)
        self.batches = self.parts[0][0] if self.parts else Batches(rows, cfg.batch_size, cfg.seed)
        self.inner = ddp.ElboModule(exp.model, exp.guide, exp.elbo)
        self.module = ddp.wrap(self.inner, self.ranks)
        self.part_rows = ddp.parts(self.num_data, P)[self.ranks.rank]

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
        return ddp.slice_rows(state, self.tables, self.part_rows, self.num_data)

    def consolidate(self, state: dict) -> dict | None:
        """The state to write (rank 0: every rank's rows gathered), None on the other ranks."""
        if self.ranks.size == 1:
            return state
        if not self.tables:
            return state if self.ranks.lead else None
        return ddp.gather_rows(state, self.tables, self.ranks)

    def _loss(self, k, idx, x, y, n, weight, step, beta, last):
        with seeded(chunk_seed(self.seed, step, k)):
            x = torch.bernoulli(x) if self.dynamic else x
            target, c = self.exp.condition(x, y)
            sync_later = self.module is not self.inner and not last
            with self.module.no_sync() if sync_later else contextlib.nullcontext():
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

    def step(self, step: int, beta: float) -> tuple[float, float]:
        """The step's loss summed over chunks and ranks (gradients accumulated) and the bound at β = 1 per datapoint."""
        value = bound = 0.0
        chunks = list(self._chunks(step))
        gone = ddp.lost_rank(self.ranks.rank) if self.ranks.size > 1 else contextlib.nullcontext()
        with gone:  # the all-reduce runs inside backward
            for j, chunk in enumerate(chunks):
                loss = self._loss(*chunk, step, beta, last=j == len(chunks) - 1)
                value += loss
                bound += loss if beta == 1.0 else self._bound(*chunk, step)
        value, bound = self.ranks.sum([value, bound])
        return value, -bound / self.num_data
