"""One writer per run folder: an OS file lock (``fcntl.flock``) on ``RUN/.lock`` held while a run trains.

The kernel releases the lock when its process ends, however it ends (kill -9 included), so a stale ``.lock`` file
never blocks; a second writer while the first is alive gets one line naming the process that holds the folder.
``--overwrite`` clears a run folder (``clear``) while holding the lock, so it cannot delete a folder another run is
writing. Without ``fcntl`` (not POSIX) runs go unlocked.

``evaluate``, ``sample`` and ``diagnose`` read a run's checkpoint and write their results (evaluation.json, PNGs,
diagnostics.json) into the folder: they hold the same lock shared (``read_lock``). Shared rather than atomic writes
alone, because what they write describes the checkpoint they read: while a train holds the folder that checkpoint
is replaced every few steps and an ``--overwrite`` may clear the folder, which would leave an evaluation of one run
in the folder of another. So a reader is refused, in one line naming the train's pid, while a train holds the
folder; readers do not block each other; and a train (or ``--overwrite``) waits for no reader but is refused while
one holds the folder. Without ``fcntl``, or in a folder this user cannot write, readers go unlocked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs.files import LOCK

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (creating the folder)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK, "a+")  # noqa: SIM115 - held for the whole block
    except OSError as err:
        raise PyroLVMError(
            f"cannot write the run folder {str(run_dir)!r} ({err.strerror}); choose another with "
            "--set train.out_dir=OTHER"
        ) from None
    try:
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PyroLVMError(
                f"run folder {str(run_dir)!r} is in use by {_holder(handle)}; wait for it to finish, or write "
                "elsewhere with --set train.out_dir=OTHER"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def _pid(handle) -> str:
    """The pid the last train wrote into the lock file."""
    handle.seek(0)
    text = handle.read()
    text = text.decode(errors="replace") if isinstance(text, bytes) else text
    return text.strip() or "unknown"


def _holder(handle) -> str:
    """Who blocks an exclusive lock: a train (its pid is in the file) or readers, which write no pid; a shared
    lock that succeeds means only readers hold it (it is released when the handle closes)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"another pyro-lvm train (pid {_pid(handle)})"
    fcntl.flock(handle, fcntl.LOCK_UN)  # the probe's lock must not refuse a writer arriving after this one
    return "a pyro-lvm evaluate, sample or diagnose reading it (or a train that has just finished)"


@contextmanager
def read_lock(run_dir: Path, create: bool = True, doing: str = "evaluate or sample it") -> Iterator[None]:
    """Hold ``run_dir``'s lock shared for the block (a folder that does not exist is left to the caller's checks).
    ``create=False`` (a read-only open, ``pyro_lvm.load``) writes nothing: the lock is held only where a train made
    one. ``doing`` completes the refusal while a train holds the folder."""
    handle = None
    if fcntl is not None and run_dir.is_dir() and (create or (run_dir / LOCK).is_file()):
        try:
            handle = open(run_dir / LOCK, "a+" if create else "rb")  # noqa: SIM115 - held for the whole block
        except OSError:  # a folder this user cannot write: its writes fail on their own, with their own message
            handle = None
    try:
        if handle is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PyroLVMError(
                    f"run folder {str(run_dir)!r} is being written by a pyro-lvm train (pid {_pid(handle)}); {doing} "
                    "once that train has finished (or a copy of the folder)"
                ) from None
        yield
    finally:
        if handle is not None:
            handle.close()


def clear(run_dir: Path) -> None:
    """Empty a run folder whose lock this process holds (all but the lock)."""
    for entry in run_dir.iterdir():
        if entry.name != LOCK:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
