"""The CUDA-graph step's logic on the CPU (pyro_lvm/training/strategies/graph.py): static buffers, one graph per
batch shape, warm-up and capture undone before the first replay, eager steps during KL warm-up, the deferred loss
and the device-side finite flag read by the non-finite guard at rows. A stand-in replaces ``torch.cuda.graph``: it
calls the captured function on each replay, as a graph replays its kernels. The CUDA capture itself runs in
tests/test_gpu.py on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from test_pure_step import CASES, experiment, params_of, trained

from pyro_lvm.context import scope
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training.loop import fit
from pyro_lvm.training.run import callbacks
from pyro_lvm.training.state import RunState
from pyro_lvm.training.strategies.graph import GraphStrategy


class StandIn:
    """A 'graph': the warm-up runs (two), the caller's reset, then each replay calls ``run`` once."""

    made = 0

    def __init__(self, run, reset) -> None:
        run()
        run()
        reset()
        self.run = run
        StandIn.made += 1

    def replay(self) -> None:
        self.run()


def graph_run(sections: dict, steps: int = 14, extra=()):
    sections = {k: dict(v) for k, v in sections.items()}
    sections.setdefault("train", {}).update(steps=steps, checkpoint_every=7, kl_warmup_steps=3, eval_every=5)
    exp = experiment(sections)
    with scope(validation=False):  # as train() runs a fit
        strategy = GraphStrategy(exp, exp.recipe, capture=StandIn)
        history = fit(exp, strategy, [*callbacks(exp, None, False), *extra], RunState(seed=exp.cfg.train.seed))
    return exp, strategy, history


def test_graph_steps_equal_eager_steps_with_warmup_and_a_short_last_batch():
    """200 rows in batches of 32: six full batches and one of 8 per epoch, so two graphs; steps 0-2 are KL warm-up
    (eager). Parameters equal the eager run's bit for bit, every history row to rounding."""
    StandIn.made = 0
    sections = dict(CASES["vae-amortized-trace"])
    exp, strategy, history = graph_run(sections)
    reference, expected = trained(sections, "eager", steps=14, eval_every=5, kl_warmup_steps=3, checkpoint_every=7)
    assert StandIn.made == 2 and len(strategy.graphs) == 2
    # a graph step's loss stays a tensor until the row: torch's scalar division may round the last bit otherwise
    # than Python's (seen with the 3.13 wheel), so the rows agree to rounding and the parameters bit for bit
    for key in ("train_elbo", "train_objective"):
        assert [r[key] for r in history] == pytest.approx([r[key] for r in expected], rel=1e-14, abs=0)
    for a, b in zip(params_of(exp), params_of(reference), strict=True):
        assert torch.equal(a, b)
    assert "CUDA graph of the pure step, 2 batch shape(s)" in strategy.path


class PoisonAt:
    """A callback that makes a decoder weight NaN after step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_fit_start(self, fit):
        pass

    def before_update(self, fit, value):
        pass

    def on_step_end(self, fit):
        if fit.state.step == self.at:
            with torch.no_grad():
                next(fit.exp.model.parameters()).fill_(float("nan"))

    def on_row(self, fit, row):
        pass

    def on_checkpoint(self, fit):
        pass

    def on_fit_end(self, fit):
        pass


def test_a_nonfinite_graph_step_stops_the_run_at_the_next_row_naming_the_window():
    # checked at the checkpoint of step 7 (clean: the poison comes after it) and at the row of step 10
    with pytest.raises(PyroLVMError, match=r"non-finite loss or gradient in steps 8-10 at step 10"):
        graph_run(CASES["vae-amortized-trace"], extra=[PoisonAt(7)])


def test_per_datapoint_tables_take_eager_steps_with_one_warning():
    with pytest.warns(UserWarning, match="train.step = 'graph': per-datapoint tables .*; taking eager steps"):
        exp, strategy, history = graph_run(CASES["per_datapoint"], steps=4)
    assert not strategy.graphs and "eager step" in strategy.path


def test_the_graph_step_without_cuda_is_refused_in_one_line():
    exp = experiment(CASES["vae-amortized-trace"])
    with pytest.raises(PyroLVMError, match="train.step = 'graph' captures CUDA graphs: set train.device = 'cuda'"):
        GraphStrategy(exp, exp.recipe)
