"""Seeded side streams: evaluations and initialisations draw from their own stream, never the training one."""

from __future__ import annotations

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
