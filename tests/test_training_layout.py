"""The training path's house: a new step kind is one strategy class and its registration, a new side effect is one
callback, model kinds are recognised by their recipe only, and ranks are known to the strategy layer only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.training import strategies
from pyro_lvm.training.callbacks.base import Callback
from pyro_lvm.training.experiment import Experiment
from pyro_lvm.training.loop import fit
from pyro_lvm.training.recipes import recipe_for
from pyro_lvm.training.run import callbacks, train
from pyro_lvm.training.state import RunState
from pyro_lvm.training.strategies.single import SingleStrategy

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_lvm"


class RecordingStrategy(SingleStrategy):
    """The tests' own step kind: the single step, recording every call (what a compiled or graph-captured step
    would replace)."""

    name = "recording"

    def __init__(self, exp, recipe) -> None:
        super().__init__(exp, recipe)
        self.calls: list[tuple[int, float]] = []

    def step(self, step: int, beta: float) -> tuple[float, float]:
        self.calls.append((step, beta))
        return super().step(step, beta)


class HookOrder(Callback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_fit_start(self, fit) -> None:
        self.seen.append("start")

    def before_update(self, fit, value) -> None:
        self.seen.append("update")

    def on_row(self, fit, row) -> None:
        self.seen.append(f"row{row['step']}")

    def on_checkpoint(self, fit) -> None:
        self.seen.append(f"save{fit.state.step}")

    def on_fit_end(self, fit) -> None:
        self.seen.append("end")


def params(exp) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (exp.model, exp.guide) for p in m.parameters()]


def test_a_registered_strategy_trains_as_the_built_in_step_it_extends():
    strategies.register_strategy(RecordingStrategy)
    try:
        cfg = tiny_config(train={"steps": 12, "kl_warmup_steps": 4, "eval_every": 5})
        reference = Experiment.from_config(cfg)
        expected = train(reference)
        exp = Experiment.from_config(cfg)
        strategy = strategies.build(exp, "recording")
        hooks = HookOrder()
        history = fit(exp, strategy, [*callbacks(exp, None, False), hooks], RunState(seed=cfg.train.seed))
    finally:
        del strategies.STRATEGIES["recording"]
    assert strategy.calls == [(s, min(1.0, (s + 1) / 4)) for s in range(12)]
    for a, b in zip(params(reference), params(exp), strict=True):
        assert torch.equal(a, b)
    assert [r["train_elbo"] for r in history] == [r["train_elbo"] for r in expected]
    assert hooks.seen[0] == "start" and hooks.seen[-1] == "end" and hooks.seen.count("update") == 12
    assert [h for h in hooks.seen if h.startswith("row")] == ["row5", "row10", "row12"]
    assert [h for h in hooks.seen if h.startswith("save")] == ["save10", "save12"]  # checkpoint_every = 10


def test_a_strategy_registered_twice_under_one_name_is_refused():
    class Other(SingleStrategy):
        name = "single"

    with pytest.raises(PyroLVMError, match="registered twice"):
        strategies.register_strategy(Other)


def test_a_callback_can_stop_the_run_which_ends_as_at_its_last_step(tmp_path):
    class StopAtThree(Callback):
        def on_step_end(self, fit) -> None:
            fit.stop = fit.state.step == 3

    exp = Experiment.from_config(tiny_config(train={"steps": 20, "checkpoint_every": 100}))
    history = train(exp, tmp_path / "run", callbacks=[StopAtThree()])
    assert history[-1]["step"] == 3
    assert RunState.restore(Experiment.from_config(exp.cfg), tmp_path / "run").step == 3  # saved as a last step


def test_each_model_kind_trains_by_its_recipe():
    m2 = tiny_config(
        data={"labelled": 20},
        model={"name": "m2"},
        prior={"name": "conditional", "hidden": [8]},
        guide={"name": "m2", "classifier_hidden": [8]},
        elbo={"name": "trace_enum"},
    )
    quadrants = tiny_config(model={"name": "cvae", "condition": "quadrants"}, baseline={"steps": 2})
    names = {recipe_for(Experiment.from_config(c).model).name for c in (tiny_config(), m2, quadrants)}
    assert names == {"plain", "semi_supervised", "quadrant"}
    exp = Experiment.from_config(m2)
    exp.cfg = exp.cfg.model_copy(update={"train": exp.cfg.train.model_copy(update={"micro_batches": 2})})
    with pytest.raises(PyroLVMError, match="m2 trains in one process"):
        strategies.build(exp)


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_model_kinds_are_named_by_recipes_and_the_registry_only():
    probes = re.compile(r"label_latent|== \"m2\"|!= \"m2\"")
    found = sorted(name for name, text in _sources().items() if probes.search(text))
    assert found == [], f"model kinds probed outside recipes: {found}"


def test_ranks_are_constructed_in_the_strategy_layer_only():
    found = sorted(name for name, text in _sources().items() if re.search(r"\bRanks\(\)", text))
    assert found and all(name.startswith("training/strategies/") for name in found), found


def test_package_files_stay_under_300_lines():
    long = {name: text.count("\n") for name, text in _sources().items() if text.count("\n") >= 300}
    assert long == {}
