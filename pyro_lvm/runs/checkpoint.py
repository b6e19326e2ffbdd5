"""Atomic checkpoints: written to a temporary file in the same folder, flushed, then renamed over the old one,
so a crash never leaves a half-written checkpoint, and a failed write removes its temporary file. Loaded with
``weights_only=True`` (no pickled code) and checked: the keys a resume needs, and finite tensors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.files import atomic_file

FORMAT = "pyro_lvm/1"
REQUIRED = ("step", "model", "guide", "optim", "rng", "history")


def tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) for every tensor in nested dicts / lists (a state dict, an optimiser state)."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from tensors(value, f"{prefix}.{i}")


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating tensor holding a NaN or infinity (sparse: its values), or None."""
    for name, t in named:
        if t is None or not t.is_floating_point():
            continue
        values = t.coalesce().values() if t.is_sparse else t
        if not bool(torch.isfinite(values).all()):
            return name
    return None


def save(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    try:
        with atomic_file(path, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
    except OSError as err:
        raise PyroLVMError(
            f"could not write the checkpoint {str(path)!r} ({err.strerror or err}); the previous one is intact: "
            "free space or permissions, then resume"
        ) from None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PyroLVMError(f"no checkpoint at {str(path)!r}; train first with `pyro-lvm train CONFIG`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the file is not usable
        raise PyroLVMError(
            f"checkpoint {str(path)!r} is corrupt or not a pyro_lvm checkpoint ({type(err).__name__}); "
            "delete it and train again, or resume from another run folder"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PyroLVMError(f"checkpoint {str(path)!r} is not a {FORMAT} checkpoint; train again to create one")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise PyroLVMError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it is damaged: train again")
    step, history = state["step"], state["history"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise PyroLVMError(f"checkpoint {str(path)!r} has step {step!r}, not a count of steps; it is damaged")
    if not isinstance(history, list) or not all(isinstance(r, dict) and "step" in r for r in history):
        raise PyroLVMError(f"checkpoint {str(path)!r} holds a damaged history (rows of metrics); train again")
    if not all(isinstance(state[k], dict) for k in ("model", "guide", "optim")):
        raise PyroLVMError(f"checkpoint {str(path)!r} holds no state dicts for model, guide and optim; it is damaged")
    bad = first_nonfinite(tensors({k: state[k] for k in ("model", "guide")}))
    if bad is not None:
        raise PyroLVMError(f"checkpoint {str(path)!r} holds non-finite values ({bad}); it cannot be resumed")
    return state
