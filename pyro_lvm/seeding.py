"""Seeded side streams: evaluations and initialisations draw from their own stream, never the training one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def cuda_devices() -> list[int]:
    """The CUDA devices whose generators are in use (none until CUDA is initialised, e.g. on a CPU machine)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


@contextmanager
def seeded(seed: int | None = None) -> Iterator[None]:
    """Run the block on its own random stream, seeded by ``seed``, and hand the caller's stream back untouched:
    the CPU generator and, once CUDA is in use, each CUDA device's generator (``torch.manual_seed`` seeds all).
    This is what keeps resume exact: an evaluation in the middle of training shifts no training draw."""
    with torch.random.fork_rng(devices=cuda_devices()):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def stream_seed(seed: int, *keys: int | str) -> int:
    """The seed of the stream named by ``keys`` (a training step and chunk, an evaluation batch): a hash, so no two
    (seed, keys) share a stream and any of them can be drawn without drawing the others."""
    digest = hashlib.blake2b("/".join(map(str, ("pyro_lvm", seed, *keys))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The CPU generator's state and each in-use CUDA generator's: what ``replayed`` takes."""
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda_devices()]


@contextmanager
def replayed(state: tuple[torch.Tensor, list[torch.Tensor]]) -> Iterator[None]:
    """Run the block on a copy of the stream at ``state`` (it redraws what was drawn from there), then hand the
    caller's stream back untouched."""
    with torch.random.fork_rng(devices=cuda_devices()):
        torch.set_rng_state(state[0])
        for device, cuda_state in enumerate(state[1]):
            torch.cuda.set_rng_state(cuda_state, device)
        yield
