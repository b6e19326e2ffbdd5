"""Memory checks before allocating: a request the machine cannot hold is one line with the estimate and the
limit, not an allocator traceback (or the kernel's OOM killer) minutes later."""

from __future__ import annotations

import os

from pyro_lvm.errors import PyroLVMError

SHARE = 0.8  # of physical memory a single request may take


def physical_memory() -> int:
    """Bytes of physical memory on this machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no check
        return 2**62


def require(num_bytes: float, what: str, fix: str) -> None:
    """Refuse ``num_bytes`` (an estimate for ``what``) beyond SHARE of physical memory, naming ``fix``."""
    limit = SHARE * physical_memory()
    if num_bytes > limit:
        raise PyroLVMError(
            f"{what} needs about {num_bytes / 2**30:,.1f} GiB, more than this machine can hold "
            f"({limit / 2**30:,.1f} GiB, {SHARE:.0%} of its memory); {fix}"
        )


def mlp_parameters(sizes: list[int]) -> int:
    """Weights and biases of the MLP with these layer sizes."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
