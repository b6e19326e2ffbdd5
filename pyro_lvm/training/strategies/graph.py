"""``train.step = "graph"``: on a CUDA device, the whole step (the pure function's forward and backward, gradient
clipping and the capturable Adam update) captured once as a CUDA graph and replayed, one launch per step.

- Inputs live in static buffers: each step copies its batch rows (gathered on the device from the resident training
  set), condition and indices in; β = 1 is a buffer too. The graph's random draws come from torch's CUDA generator
  (graph-safe Philox offsets), so a replay draws what the eager step would draw at the same generator state.
- One graph per batch signature: the full batch and the short last batch of an epoch get one each.
- Nothing is read back per step: the loss stays on the device, and a device flag collects "every loss and gradient
  was finite" inside the graph; the loop reads both only at its rows (``train.eval_every``) and checkpoints, where
  the non-finite guard stops the run naming the window of steps (``nonfinite_since``) before anything is saved.
- Taken eagerly instead, and said once in a warning: steps during KL warm-up (the bound at β = 1 needs the same
  draws twice), a program the trace cannot express, per-datapoint tables (RowAdam's rows change size per step)
  and capture failures.

``capture`` is the graph maker: ``CudaGraph`` on a GPU; tests hand in a stand-in that runs the captured function
directly, so the buffer, signature and flag logic run on the CPU too."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from pyro.infer.util import is_validation_enabled

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.infer.pure import PureStep
from pyro_lvm.training.strategies.single import SingleStrategy
from pyro_lvm.training.strategies.traced import plain_objective


class CudaGraph:
    """``run`` captured on the current CUDA device after ``warmup`` calls on a side stream (lazy initialisations,
    cuBLAS workspaces); ``replay()`` launches it. The warm-up calls change parameters, optimiser state and the random
    stream: ``reset`` (given by the caller) puts them back before the first replay."""

    def __init__(self, run: Callable[[], None], reset: Callable[[], None], warmup: int = 3) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            run()
        reset()

    def replay(self) -> None:
        self.graph.replay()


class GraphStrategy(SingleStrategy):
    """One process on one CUDA device, each step one graph replay (see the module docstring)."""

    name = "graph"
    deferred = True  # step() returns device tensors; the loop and the guard read them at rows only

    def __init__(self, exp, recipe, capture: Callable = CudaGraph) -> None:
        super().__init__(exp, recipe)
        if capture is CudaGraph and exp.device.type != "cuda":
            raise PyroLVMError(
                "train.step = 'graph' captures CUDA graphs: set train.device = 'cuda', or use train.step = "
                "'compiled' (or 'traced') on the CPU"
            )
        self.capture = capture
        self.pure = PureStep(plain_objective(exp), exp.model, exp.guide)
        self.graphs: dict = {}  # signature -> (graph, buffers, outputs)
        self.finite = torch.ones((), dtype=torch.bool, device=exp.device)  # every step's loss and grads since a read
        self.window_start = 0
        self.eager_reason: str | None = None
        self._pending = False  # an eager step's update, for update()
        reason = self._cannot_capture()
        if reason is not None:
            self._eager(reason)

    def _cannot_capture(self) -> str | None:
        optim = self.exp.optim
        if getattr(optim, "sparse", None) is not None:
            return "per-datapoint tables have row-wise Adam updates of varying size; use train.step = 'traced'"
        if not isinstance(getattr(optim, "dense", None), torch.optim.Adam):
            return f"the optimiser {type(optim).__name__} has no capturable form"
        return None

    @property
    def path(self) -> str:
        if self.eager_reason is not None:
            return f"{self.exp.cfg.elbo.name}, eager step ({self.eager_reason})"
        return f"{self.exp.cfg.elbo.name}, CUDA graph of the pure step, {len(self.graphs)} batch shape(s)"

    def _eager(self, reason: str) -> None:
        self.eager_reason = reason
        warnings.warn(f"train.step = 'graph': {reason}; taking eager steps", stacklevel=3)

    def step_on(self, target, c, idx, beta: float):
        if self.eager_reason is None and is_validation_enabled():
            self._eager("Pyro's validation is on (train.pyro_validation): its checks read values on the host")
        entry = None
        if beta == 1.0 and self.eager_reason is None:  # warm-up is eager: the bound at beta = 1 replays the draws
            entry = self._graph(target, c, idx)
        if entry is None:
            self._pending = True
            return super().step_on(target, c, idx, beta)
        graph, buffers, out = entry
        for buf, t in zip(buffers, (target, c, idx), strict=True):
            if buf is not None:
                buf.copy_(t, non_blocking=True)
        graph.replay()
        self._pending = False
        loss = out["loss"].clone()  # the next replay overwrites the static output
        return loss, -loss / self.num_data

    def _graph(self, target, c, idx):
        signature = tuple(None if t is None else tuple(t.shape) for t in (target, c, idx))
        if signature not in self.graphs:
            try:
                self.graphs[signature] = self._build(target, c, idx)
            except Exception as err:  # noqa: BLE001 - a capture that fails: the eager step runs
                reason = self.pure.failure or f"{type(err).__name__}: {str(err).strip()[:160]}"
                self._eager(f"the step cannot be captured: {reason}")
                return None
        return self.graphs[signature]

    def _build(self, target, c, idx):
        exp = self.exp
        buffers = [None if t is None else t.clone() for t in (target, c, idx)]
        beta = torch.ones((), dtype=torch.float64, device=exp.device)
        fn = self.pure.trace(buffers[0], buffers[1], buffers[2], self.num_data, beta)
        dense = exp.optim.dense
        for group in dense.param_groups:
            group["capturable"] = exp.device.type == "cuda"  # torch's capturable Adam is CUDA's (CPU: tests)
        for p in self.pure.params:  # an eager step's state: the capturable update keeps its step count on p's device
            if "step" in dense.state.get(p, {}):
                dense.state[p]["step"] = dense.state[p]["step"].to(p.device, torch.float32)
        out: dict = {}
        params, state = self.pure.params, self.pure.state

        def run() -> None:
            with torch.no_grad():  # the graph holds its own backward
                loss, grads = fn(params, state, buffers[0], buffers[1], buffers[2], beta)
            sums = [g.sum() for g in grads if g is not None]
            ok = torch.isfinite(loss) & torch.isfinite(torch.stack(sums)).all() if sums else torch.isfinite(loss)
            self.finite.logical_and_(ok)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            exp.optim.step()  # clipping (foreach, no host read) and the capturable Adam update
            out["loss"] = loss

        saved = _snapshot(params, dense, self.finite)
        graph = self.capture(run, lambda: _restore(saved, params, dense, self.finite))
        return graph, buffers, out

    def update(self) -> None:
        if self._pending:  # an eager step's update; a replay has updated inside the graph
            super().update()

    def nonfinite_since(self, step: int) -> str | None:
        """At a row or checkpoint: None if every step since the last read had a finite loss and finite gradients,
        else the window of steps, e.g. 'steps 101-200'. One device read."""
        start, self.window_start = self.window_start, step
        if bool(self.finite):
            return None
        self.finite.fill_(True)
        return f"steps {start + 1}-{step}"


def _snapshot(params, optim, finite) -> tuple:
    """Parameters, optimiser state and random streams before the warm-up and capture runs."""
    state = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in optim.state[p].items()} for p in params}
    cuda = torch.cuda.get_rng_state(params[0].device) if params[0].is_cuda else None
    return [p.detach().clone() for p in params], state, torch.get_rng_state(), cuda, finite.clone()


def _restore(saved, params, optim, finite) -> None:
    """Back to the snapshot, in place (the graph holds these tensors' addresses); optimiser state the warm-up
    created from nothing is zeroed (a fresh Adam: step 0, zero moments)."""
    values, state, cpu, cuda, flag = saved
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
            p.grad = None
            before = state[id(p)]
            for key, now in optim.state[p].items():
                if torch.is_tensor(now):
                    now.copy_(before[key]) if key in before else now.zero_()
        finite.copy_(flag)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, params[0].device)
