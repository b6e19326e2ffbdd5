"""Atomic checkpoints: written to a temporary file in the same folder, flushed, then renamed over the old one,
so a crash never leaves a half-written checkpoint. Loaded with ``weights_only=True`` (no pickled code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pyro_lvm.errors import PyroLVMError

FORMAT = "pyro_lvm/1"


def save(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    return state
