"""All of a run's state that is not the experiment's modules, in one object (after NumPyro's ``SVIState``): the
step, the history rows, the summary, the random streams, the step of the checkpoint on disk. A checkpoint is
``RunState.state_dict(exp)``; resume is ``RunState.restore(exp, run_dir, resuming=True)`` handed to ``fit``.

Resume is exact on CPU: a checkpoint holds parameters, optimiser state, the torch RNG states (CPU, and CUDA when in
use) and the step; batch order depends only on (seed, epoch); evaluations draw from their own RNG stream. So N steps
+ resume to 2N steps gives the same parameters as 2N steps in one go. On CUDA the streams are restored too, but
some CUDA kernels (e.g. index backward) are not bit-deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.runs import checkpoint
from pyro_lvm.runs.files import CHECKPOINT
from pyro_lvm.runs.identity import check_identity, identity
from pyro_lvm.seeding import cuda_devices


@dataclass
class RunState:
    """Where a run stands. ``seed``: a fresh run's training stream, seeded once when ``fit`` starts (after the
    callbacks' start, e.g. a baseline fitted on its own stream); a restored run's streams are its checkpoint's."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    saved_step: int | None = None  # the step of the checkpoint on disk (None: nothing written yet)
    seed: int | None = None
    resumed: bool = False

    @property
    def elapsed(self) -> float:
        """Seconds of training so far (a resumed run's clock goes on from its checkpoint)."""
        return self.history[-1]["time_s"] if self.history else 0.0

    def start_stream(self) -> None:
        """Seed a fresh run's training stream (once); a restored run keeps the streams its checkpoint restored."""
        if self.seed is not None:
            torch.manual_seed(self.seed)
            self.seed = None

    def state_dict(self, exp: Any) -> dict[str, Any]:
        """The checkpoint: the experiment's modules and optimiser with this state and the random streams."""
        return {
            "identity": identity(exp.cfg) if exp.configured else {},
            "step": self.step,
            "model": exp.model.state_dict(),
            "guide": exp.guide.state_dict(),
            "optim": exp.optim.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": [torch.cuda.get_rng_state(d) for d in cuda_devices()],
            "history": self.history,
            "summary": self.summary,  # e.g. the baseline's fit
        }

    @classmethod
    def restore(
        cls,
        exp: Any,
        run_dir: Path,
        resuming: bool = False,
        local: Callable[[dict], dict] | None = None,
        rng: bool = True,
    ) -> RunState:
        """Load ``run_dir``'s checkpoint into ``exp`` and return its state. The run's identity (keys both configs
        have) must match; ``resuming`` also checks the training trajectory, the step and the optimiser state.
        ``local`` cuts the state to what this rank holds (its per-datapoint rows); ``rng``: restore the random
        streams (a resume needs them; a read-only look at the run leaves the caller's alone)."""
        state = checkpoint.load(run_dir / CHECKPOINT, map_location=exp.device)
        state = local(state) if local is not None else state
        check_identity(state.get("identity") or {}, identity(exp.cfg) if exp.configured else {}, run_dir, resuming)
        try:
            exp.model.load_state_dict(state["model"])
            exp.guide.load_state_dict(state["guide"])
            exp.optim.load_state_dict(state["optim"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise PyroLVMError(
                f"checkpoint in {str(run_dir)!r} does not fit this config ({str(err).splitlines()[0]}); "
                "resume with the config saved in that run folder"
            ) from None
        step = int(state["step"])
        bad = checkpoint.first_nonfinite(checkpoint.tensors(state["optim"])) if resuming else None
        if bad is not None:
            raise PyroLVMError(
                f"the checkpoint in {str(run_dir)!r} holds a non-finite optimiser state ({bad}); it "
                "cannot be resumed (its parameters can still be evaluated)"
            )
        if resuming and step > exp.cfg.train.steps:
            raise PyroLVMError(
                f"the checkpoint in {str(run_dir)!r} is at step {step}, beyond train.steps = {exp.cfg.train.steps}; "
                f"resume with --set train.steps=N for some N >= {step}"
            )
        if rng:
            torch.set_rng_state(state["rng"].cpu())
            for device, cuda_rng in enumerate(state.get("cuda_rng", [])[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_rng.cpu(), device)
        history, summary = list(state["history"]), dict(state.get("summary", {}))
        return cls(step=step, history=history, summary=summary, saved_step=step, resumed=resuming)
