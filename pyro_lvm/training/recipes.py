"""Recipes: how each model kind trains (after scvi-tools' training plans). A model names its recipe (``model.recipe``;
``register_model(..., recipe=NAME)`` for the config checks); the recipe supplies the batches, the objective, the
validation estimator and the callbacks of its kind, and says which step strategies it supports, so the loop and the
strategies never ask what kind of model they train.

| recipe            | models               | batches                               | own parts                        |
|-------------------|----------------------|---------------------------------------|----------------------------------|
| ``plain``         | VAE, CVAE (labels)   | shuffled rows                         | —                                |
| ``quadrant``      | CVAE (quadrants)     | shuffled rows                         | fits the completion baseline     |
| ``semi_supervised`` | M2                 | labelled + unlabelled rows per step   | the M2 objective, label-summed validation; one process |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro_lvm.data import Batches
from pyro_lvm.data.labelled import training_batches
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import plain_validation_elbo
from pyro_lvm.infer.elbos import build_elbo
from pyro_lvm.registry import ELBOS


class Recipe:
    """The plain recipe (VAE, label CVAE, a user's model that names no recipe)."""

    name = "plain"
    strategies: tuple[str, ...] | None = None  # the step strategies it supports (None: all)

    def objective(self, cfg: Any, data: Any, model: Any) -> Any:
        """The loss the step minimises: the configured ELBO."""
        return build_elbo(cfg.elbo)

    def batches(self, exp: Any) -> Any:
        """The one-process step's batches of training rows."""
        t = exp.cfg.train
        return Batches(exp.data.training_rows, t.batch_size, t.seed, exp.data.dynamic)

    def validation(self, exp: Any) -> Callable[[Any], float] | None:
        """The validation curve's estimator (an amortized guide's: a table of training rows has no q for
        validation points), or None."""
        return plain_validation_elbo if exp.amortized else None

    def callbacks(self, exp: Any) -> list:
        """The model kind's own callbacks (run before the loop's others)."""
        return []

    def check(self, strategy: str, exp: Any, num_ranks: int) -> None:
        """Refuse, in one line, a step strategy this kind cannot train with."""
        if self.strategies is not None and strategy not in self.strategies:
            raise PyroLVMError(self.refusal(strategy))

    def refusal(self, strategy: str) -> str:
        return f"recipe {self.name!r} trains with the {', '.join(self.strategies or ())} step, not {strategy!r}"


class QuadrantRecipe(Recipe):
    """The quadrant CVAE: its completion baseline is fitted first (``callbacks.baseline.FitBaseline``)."""

    name = "quadrant"

    def callbacks(self, exp: Any) -> list:
        from pyro_lvm.training.callbacks.baseline import FitBaseline

        return [FitBaseline()]

    def check(self, strategy: str, exp: Any, num_ranks: int) -> None:
        if exp.sharded and num_ranks > 1:
            raise PyroLVMError(  # each rank would fit the frozen NN baseline on its own part of the rows
                "a quadrant CVAE with a per-datapoint guide trains in one process: drop --nproc or use another guide"
            )


class SemiSupervisedRecipe(Recipe):
    """M2 (``pyro_lvm.infer.semi_supervised``): labelled and unlabelled rows in every batch, each part scaled to
    its own size; its validation sums the label out. Chunks would cut the plain batch order, so one process."""

    name = "semi_supervised"
    strategies = ("single", "traced", "compiled", "graph")  # the batch in one piece

    def objective(self, cfg: Any, data: Any, model: Any) -> Any:
        from pyro_lvm.infer.semi_supervised import SemiSupervisedObjective

        n_l = len(data.train) if data.labelled is None else int(data.labelled.sum())
        # labelled rows have nothing to enumerate: trace_enum's labelled part is Trace_ELBO (the same loss)
        labelled = cfg.elbo if cfg.elbo.name != "trace_enum" else ELBOS.schema("trace")(**cfg.elbo.kwargs())
        unlabelled = build_elbo(cfg.elbo)
        aux = getattr(model, "aux_weight", 0.0)
        return SemiSupervisedObjective(build_elbo(labelled), unlabelled, n_l, len(data.train) - n_l, aux)

    def batches(self, exp: Any) -> Any:
        t = exp.cfg.train
        return training_batches(exp.data.training_rows, exp.data.labelled, t.batch_size, t.seed, exp.data.dynamic)

    def validation(self, exp: Any) -> Callable[[Any], float] | None:
        from pyro_lvm.evaluation.labels import label_validation_elbo

        return label_validation_elbo

    def refusal(self, strategy: str) -> str:
        return "the semi-supervised model m2 trains in one process with train.micro_batches = 1: drop --nproc"


RECIPES: dict[str, Recipe] = {r.name: r for r in (Recipe(), QuadrantRecipe(), SemiSupervisedRecipe())}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe (an instance of a ``Recipe`` subclass) under its ``name``, for models whose ``recipe`` names it."""
    if recipe.name in RECIPES and type(RECIPES[recipe.name]) is not type(recipe):
        raise PyroLVMError(f"recipe {recipe.name!r} is registered twice; choose another name")
    RECIPES[recipe.name] = recipe
    return recipe


def recipe_for(model: Any) -> Recipe:
    """The recipe ``model`` names (``model.recipe``; a model that names none trains by the plain recipe)."""
    name = getattr(model, "recipe", "plain")
    if name not in RECIPES:
        raise PyroLVMError(f"model names recipe {name!r}, which is not registered; registered: {', '.join(RECIPES)}")
    return RECIPES[name]
