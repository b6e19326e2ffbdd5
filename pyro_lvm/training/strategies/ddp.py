"""Training with several ranks: ``torch.distributed`` + ``DistributedDataParallel``, launched by ``torchrun``.

P ranks run one step together. Step s's global batch is cut into chunks (``train.micro_batches`` of them, P by
default); rank r computes its chunks' losses ``w_k · loss_k`` and their gradients, and the shared (dense)
parameters' gradients are *summed* over ranks by a DDP communication hook, so every rank holds

    ∇ Σ_k w_k loss_k,    w_k = B_k / B (amortized: each chunk's plate scale is N / B_k, so the sum is N/B Σ_i ∇ℓ_i)

which is the gradient of the single process that runs the same chunks one after another (``ChunkedStrategy``
with the same ``micro_batches``). Per-datapoint tables are sharded: rank r owns a contiguous part of the training
rows (N_r of them), draws every chunk from it with a plate of N_r rows (scale N_r / B_r: the stratified estimate of
the whole-data loss) and keeps those rows, their gradients and their row-wise optimiser state to itself; DDP is
told to ignore them, so rows never travel. Checkpoints gather the shards on rank 0 into the single-process layout
(one file, any P can read it); resume slices each rank's rows back out.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from pyro_lvm.data import Dataset, Split
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.strategies.devices import resolve_device


class Ranks:
    """This process's place among the ranks of a job (one rank, rank 0, when ``torch.distributed`` is not set up)."""

    def __init__(self) -> None:
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.size = dist.get_world_size() if self.active else 1
        self.lead = self.rank == 0  # the rank that prints and writes

    def _device(self) -> torch.device:
        return (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        )

    def sum(self, values: list[float]) -> list[float]:
        """The sums over ranks of a few floats (one all-reduce, in float64)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        with lost_rank(self.rank):
            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one of them (e.g. a wall-clock budget ran out)."""
        return self.sum([float(flag)])[0] > 0

    def gather_all(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        everyone = [None] * self.size
        with lost_rank(self.rank):
            dist.all_gather_object(everyone, value)
        return everyone

    def barrier(self) -> None:
        if self.active:
            with lost_rank(self.rank):
                dist.barrier()


_PEER_GONE = ("Connection reset", "Connection closed", "gloo", "NCCL", "Broken pipe", "timed out")


@contextmanager
def lost_rank(rank: int) -> Iterator[None]:
    """A collective that fails because a peer has gone (killed, out of memory, its own error) is reported in one
    line; the launcher names the rank that went."""
    try:
        yield
    except RuntimeError as err:
        peer_gone = isinstance(err, dist.DistBackendError) or any(w in str(err) for w in _PEER_GONE)
        if not peer_gone:
            raise
        raise PyroLVMError(
            f"rank {rank}: lost contact with another rank ({str(err).splitlines()[0][:120]}); the job stops and the "
            "last checkpoint is intact"
        ) from None


def launched() -> bool:
    """True inside a process that torchrun started for a job of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


@contextmanager
def session(device: str) -> Iterator[Ranks]:
    """Join the job torchrun started (gloo on CPU, nccl on CUDA, chosen by ``train.device``) for the block; a plain
    process gets one rank and nothing is set up."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield Ranks()
        return
    if resolve_device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" then means this rank's GPU
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield Ranks()
    finally:
        dist.destroy_process_group()


def check(
    batch_size: int, num_train: int, ranks: int, micro_batches: int, sharded: bool, device: str | None = None
) -> None:
    """The settings a job of ``ranks`` ranks cannot run with, each refused in one line (``device``: before the
    ranks start, the launcher's check)."""
    if device is not None:
        resolve_device(device)
    chunks = micro_batches if micro_batches > 1 else ranks  # a new run of P ranks: P chunks (the run records it)
    if chunks % ranks:
        raise PyroLVMError(
            f"train.micro_batches = {micro_batches} (each step in {micro_batches} chunks; a resumed run keeps its "
            f"own) cannot be shared by {ranks} ranks; use a divisor of it as the number of ranks"
        )
    batch = min(batch_size, num_train)
    if chunks > batch:
        raise PyroLVMError(
            f"{chunks} chunks per step ({ranks} ranks, train.micro_batches = {micro_batches}) but the batch holds "
            f"{batch} rows; use train.batch_size >= {chunks} or fewer ranks"
        )
    if sharded and chunks > 1:
        if ranks > 1 and chunks != ranks:
            raise PyroLVMError(
                f"a per-datapoint guide shards its rows over the ranks: train.micro_batches must be 1 or {ranks}"
            )
        if batch_size % chunks:
            raise PyroLVMError(
                f"a per-datapoint guide draws train.batch_size / {chunks} rows from each part of the data, but "
                f"{batch_size} is not divisible by {chunks}; use a multiple of {chunks}"
            )
    elif 0 < num_train % batch < chunks:
        raise PyroLVMError(
            f"the last batch of an epoch holds {num_train % batch} rows, fewer than the {chunks} chunks it is cut into; "
            f"choose train.batch_size so that {num_train} % batch_size is 0 or >= {chunks}"
        )


def parts(num_rows: int, count: int) -> list[range]:
    """The training rows cut into ``count`` contiguous parts (sizes differ by at most one)."""
    bounds = torch.arange(num_rows).tensor_split(count)
    return [range(int(b[0]), int(b[0]) + len(b)) if len(b) else range(0) for b in bounds]


def shard(data: Dataset, ranks: Ranks | None = None) -> Dataset:
    """This rank's part of the training rows (the per-datapoint guide is then built for those rows only)."""
    ranks = ranks or Ranks()
    if ranks.size == 1:
        return data
    rows = parts(len(data.train), ranks.size)[ranks.rank]

    def cut(split: Split | None) -> Split | None:
        if split is None:
            return None
        # copies: a view would keep the whole training set alive in every rank
        return Split(split.x[rows.start : rows.stop].clone(), split.y[rows.start : rows.stop].clone())

    return dataclasses.replace(data, train=cut(data.train), train_probs=cut(data.train_probs))


def shards_rows(guide_name: str) -> bool:
    """Whether the guide named ``guide_name`` keeps per-datapoint rows, which a job of several ranks shards (each
    rank builds and keeps its part): the one place this is decided for a config."""
    from pyro_lvm.registry import GUIDES

    return not getattr(GUIDES.get(guide_name), "amortized", True)


def table_names(module: nn.Module) -> list[str]:
    """Qualified names of the sparse embedding tables' weights (per-datapoint rows) in ``module``."""
    return [
        f"{name}.weight" if name else "weight"
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Embedding) and sub.sparse
    ]


class ElboModule(nn.Module):
    """Model, guide and ELBO as one module whose forward is the (weighted) loss: what DDP wraps, so that its
    reducer sees every forward and backward."""

    def __init__(self, model: nn.Module, guide: nn.Module, elbo: Any) -> None:
        super().__init__()
        self.model, self.guide, self.elbo = model, guide, elbo

    def forward(self, x, c, idx, num_data: int, beta: float, weight: float) -> torch.Tensor:
        loss = self.elbo.differentiable_loss(self.model, self.guide, x, c, idx=idx, num_data=num_data, beta=beta)
        return loss if weight == 1.0 else loss * weight


def _sum_hook(_, bucket):
    """DDP communication hook: the sum over ranks (DDP's default divides by P; the chunk weights already do)."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def wrap(module: ElboModule, ranks: Ranks) -> nn.Module:
    """``module`` under DDP (summed gradients, per-datapoint tables ignored), or itself on one rank."""
    if ranks.size == 1:
        return module
    ignore = table_names(module)
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)
    ddp_class = nn.parallel.DistributedDataParallel
    # buffers are constants here (identical on every rank): no sync at each forward; torch >= 2.14 renamed the switch
    no_sync = "forward_sync_buffers" in inspect.signature(ddp_class.__init__).parameters
    ddp = ddp_class(module, **{"forward_sync_buffers" if no_sync else "broadcast_buffers": False})
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def _row_tensors(state: dict, names: list[str]) -> list[tuple[dict, str]]:
    """(container, key) of every per-row tensor of a training state: the tables in ``guide`` and the row-wise
    optimiser's moments and step counts."""
    found = [(state["guide"], name) for name in names if name in state["guide"]]
    sparse = (state.get("optim") or {}).get("sparse") or {}
    for per_param in sparse.get("state", {}).values():
        found += [(per_param, key) for key in ("step", "exp_avg", "exp_avg_sq") if key in per_param]
    return found


def _copy_dicts(tree: Any) -> Any:
    """Nested dicts and lists copied, their tensors shared."""
    if isinstance(tree, dict):
        return {key: _copy_dicts(value) for key, value in tree.items()}
    return [_copy_dicts(value) for value in tree] if isinstance(tree, list) else tree


def gather_rows(state: dict, names: list[str], ranks: Ranks) -> dict | None:
    """On rank 0: ``state`` with every rank's rows concatenated in rank order (the single-process layout); None
    on the other ranks. Rank 0 holds the whole table while it writes."""
    if ranks.size == 1:
        return state
    # optimisers' state_dicts hold their live per-parameter dicts: rows are replaced in copies
    state = {**state, "guide": dict(state["guide"]), "optim": _copy_dicts(state["optim"])}
    found = _row_tensors(state, names)
    local = [t.cpu() for box, key in found for t in [box[key]]]
    everyone = [None] * ranks.size if ranks.lead else None
    with lost_rank(ranks.rank):
        dist.gather_object(local, everyone, dst=0)
    if not ranks.lead:
        return None
    for i, (box, key) in enumerate(found):
        box[key] = torch.cat([shards[i] for shards in everyone]).to(box[key].device)
    return state


def slice_rows(state: dict, names: list[str], rows: range, num_rows: int) -> dict:
    """A gathered (or single-process) state cut to ``rows``: what a rank loads on resume."""
    for box, key in _row_tensors(state, names):
        if box[key].shape[0] != num_rows:
            raise PyroLVMError(
                f"the checkpoint's per-datapoint tables hold {box[key].shape[0]} rows but the data has {num_rows}; "
                "resume with the data the run was trained on"
            )
        box[key] = box[key][rows.start : rows.stop].clone()
    return state
