"""Preemption-safe training: SIGINT (Ctrl-C), SIGTERM (what a cluster scheduler sends before it kills a job) and
SIGUSR1 (a scheduler's warning, e.g. SLURM's ``--signal``) finish the current step, and the run then ends as at its
last step: a metrics row and a checkpoint at that step (atomic, checked for non-finite values, as every checkpoint),
then ``Interrupted`` naming the step and the resume command. A signal costs at most one step. Further signals while
the step or the checkpoint finish are noted and ignored, so they cannot break the write. With several ranks every
rank stops at the same step (the flag is reduced over ranks each step) and the checkpoint is gathered whole.

The handlers are installed only while ``fit`` runs, in the main thread, and the previous ones are put back after.
"""

from __future__ import annotations

import signal
import threading

from pyro_lvm.errors import Interrupted
from pyro_lvm.training.callbacks.base import Callback

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopOnSignal(Callback):
    """Stop after the step in which one of ``SIGNALS`` arrived; raise ``Interrupted`` once the fit has ended."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum

    def on_fit_start(self, fit) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_step_end(self, fit) -> None:
        if self.received is not None:
            fit.stop = True  # the loop agrees it over the ranks: every rank stops at this step

    def on_fit_end(self, fit) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self.previous = {}
        if self.received is None or not fit.finished:  # an error on the way out is the error to report
            return
        if fit.state.step == fit.exp.cfg.train.steps:  # it arrived in the last step: the run is complete
            return
        name = signal.Signals(self.received).name
        step = fit.state.step
        if fit.run_dir is None:
            kept = "no run folder, nothing saved"
        else:
            kept = f"checkpoint written; resume with: pyro-lvm train --resume {fit.run_dir}"
        raise Interrupted(f"stopped by {name} at step {step}; {kept}", self.received)
