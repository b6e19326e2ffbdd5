"""The cases of ``bad_input_campaign.py``: bad inputs and faults a user can reach from the CLI, each with a category
and its expected outcome ("refuse": exit 2 and one ``error:`` line; "run": exit 0; "note": exit 0 and one ``note:``
line naming what was changed or assumed). Every case runs in a folder of
its own that holds ``c.toml`` (a tiny valid config: ``toml({})``) and, for ``with_run`` cases, ``run/``, a copy of a
trained run folder of that config."""

from __future__ import annotations

import gzip
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CATEGORIES = ["config", "sizes", "data", "run folders", "faults", "NaN", "CLI args"]
BASE_RUN = "run"
BASE = {
    "data": {"max_train": "100"},
    "model": {"latent_dim": "2", "hidden": "[8]"},
    "guide": {"hidden": "[8]"},
    "train": {"steps": "2", "batch_size": "32", "progress": "false", "checkpoint_every": "2"},
    "eval": {"num_samples": "4", "num_points": "4"},
}


@dataclass
class Case:
    category: str
    name: str
    argv: list[str]
    expect: str = "refuse"  # or "run", or "note"
    contains: str = ""  # words the error (or note) line must hold
    with_run: bool = False  # copy the trained run folder to ./run first
    setup: Callable[[Path], None] | None = None  # writes what the case needs into its folder
    check: Callable[[Path], str | None] | None = None  # a post-condition: a problem, or None
    preexec: Callable[[], None] | None = None  # run in the child before exec (resource limits)
    background: tuple[list[str], str] | None = None  # (argv, file that shows it is under way) running meanwhile
    tags: list[str] = field(default_factory=list)


def toml(changes: dict[str, str | None], base: dict | None = None) -> str:
    """The base config with ``{"section.key": raw TOML value or None (removed)}``; a "section" key replaces it."""
    sections = {name: dict(values) for name, values in (base or BASE).items()}
    for key, value in changes.items():
        if "." not in key:
            sections[key] = dict(value) if value else {}
            continue
        section, name = key.split(".", 1)
        table = sections.setdefault(section, {})
        table.pop(name, None) if value is None else table.__setitem__(name, value)
    return "".join(
        f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items()) + "\n" for s, table in sections.items()
    )


def writes(files: dict[str, str | bytes]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return setup


def config_case(category: str, name: str, changes: dict, expect: str = "refuse", contains: str = "", **kw) -> Case:
    return Case(category, name, ["train", "c.toml"], expect, contains, setup=writes({"c.toml": toml(changes)}), **kw)


def set_case(category: str, name: str, sets: list[str], expect: str = "refuse", contains: str = "") -> Case:
    return Case(category, name, ["train", "c.toml", *(a for s in sets for a in ("--set", s))], expect, contains)


def edit_checkpoint(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        import torch

        path = folder / "run" / "checkpoint.pt"
        state = torch.load(path, weights_only=True)
        edit(state)
        torch.save(state, path)

    return setup


def _idx(array: np.ndarray, magic: bytes | None = None) -> bytes:
    header = (magic or bytes([0, 0, 0x08, array.ndim])) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def idx_files(**damage: bytes) -> dict[str, bytes]:
    """Fashion-MNIST's four IDX .gz files (12 training, 5 test images) in ./idx, some replaced by ``damage``."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in [("train", 12), ("t10k", 5)]:
        files[f"idx/{prefix}-images-idx3-ubyte.gz"] = _idx(rng.integers(0, 256, (n, 28, 28)))
        files[f"idx/{prefix}-labels-idx1-ubyte.gz"] = _idx(rng.integers(0, 10, (n,)))
    files.update({f"idx/{k.replace('_', '-')}.gz": v for k, v in damage.items()})
    files["c.toml"] = toml({"data": {"name": '"fashion_mnist"', "root": '"idx"', "binarize": '"none"'}})
    return files


def npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def arrays_case(
    name: str, content: bytes, expect: str = "refuse", contains: str = "", suffix: str = ".npy", category: str = "data"
) -> Case:
    files = {
        f"x{suffix}": content,
        "c.toml": toml({"data": {"name": '"arrays"', "path": f'"x{suffix}"', "binarize": '"none"'}}),
    }
    return Case(category, name, ["train", "c.toml"], expect, contains, setup=writes(files))


def file_size_limit(size: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def no_tmp_left(folder: Path) -> str | None:
    left = [p.name for p in folder.rglob("*.tmp")]
    return f"temporary files left: {left}" if left else None


def finite_checkpoint(folder: Path) -> str | None:
    """The run's checkpoint loads (the loader refuses non-finite parameters)."""
    from pyro_lvm.errors import PyroLVMError
    from pyro_lvm.runs import checkpoint

    try:
        checkpoint.load(next(folder.glob("runs/*/checkpoint.pt")))
    except (PyroLVMError, StopIteration) as err:
        return f"no finite checkpoint: {err}"
    return None


def checkpoint_step(step: int) -> Callable[[Path], str | None]:
    def check(folder: Path) -> str | None:
        import torch

        saved = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)["step"]
        return None if saved == step else f"checkpoint at step {saved}, expected {step}"

    return check
