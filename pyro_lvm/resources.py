"""Memory checks before allocating: a request the machine cannot hold is one line with the estimate and the
limit, not an allocator traceback (or the kernel's OOM killer) minutes later."""

from __future__ import annotations

import os
from typing import NamedTuple

from pyro_lvm.errors import PyroLVMError

SHARE = 0.8  # of physical memory a single request may take


def physical_memory() -> int:
    """Bytes of physical memory on this machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no check
        return 2**62


def gpu_memory(device) -> tuple[int, int]:
    """(free, total) bytes of a CUDA device, as its driver reports them now."""
    import torch

    return torch.cuda.mem_get_info(device)


def require(num_bytes: float, what: str, fix: str, device=None) -> None:
    """Refuse ``num_bytes`` (an estimate for ``what``) beyond what ``device`` can hold, naming ``fix``: SHARE of the
    host's physical memory for the CPU (or no device); for a CUDA device, SHARE of its total memory and no more than
    is free now (other processes' allocations and this process's cache count), since that is what the allocator
    can still hand out."""
    kind = getattr(device, "type", str(device) if device is not None else "cpu").split(":")[0]
    if kind == "cuda":
        free, total = gpu_memory(device)
        limit = min(SHARE * total, free)
        where = f"the GPU ({device}) can hold ({limit / 2**30:,.1f} GiB free of {total / 2**30:,.1f} GiB)"
    else:
        limit = SHARE * physical_memory()
        where = f"this machine can hold ({limit / 2**30:,.1f} GiB, {SHARE:.0%} of its memory)"
    if num_bytes > limit:
        raise PyroLVMError(f"{what} needs about {num_bytes / 2**30:,.1f} GiB, more than {where}; {fix}")


def mlp_parameters(sizes: list[int]) -> int:
    """Weights and biases of the MLP with these layer sizes."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


class Cost(NamedTuple):
    """What a component costs in memory, for the check before anything is built: its parameters (each also has
    a gradient and two Adam moments) and the widths of its layers (each row of a batch keeps an activation per
    unit for the backward pass)."""

    parameters: int = 0
    widths: int = 0


def network_cost(net: str, sizes: list[int]) -> Cost:
    """A network of layer ``sizes`` (input, hidden..., output): its parameters if it is the built-in MLP (another
    network's are not known before it is built), and its hidden widths."""
    return Cost(mlp_parameters(sizes) if net == "mlp" else 0, sum(sizes[1:-1]))
