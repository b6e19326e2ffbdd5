"""Training: the experiment (``experiment``), the run state (``state``), the loop (``loop.fit``), the ways of
taking a step (``strategies``: single, chunked / DDP, and the launcher), the side effects (``callbacks``) and the
model kinds' recipes (``recipes``); ``run.train`` puts them together for one run. Knows no study and no CLI.

Where a new piece goes:

| new ...                                   | goes in                                                      |
|-------------------------------------------|--------------------------------------------------------------|
| way to take a step (compiled, graphed)    | ``strategies/NAME.py``: a ``Strategy`` subclass + ``register_strategy`` |
| side effect (a logger, a guard, a signal) | ``callbacks/NAME.py``: a ``Callback`` subclass, added in ``run.callbacks`` |
| model kind with its own batches/objective | ``recipes.py`` (or the model's module): a ``Recipe`` + ``register_recipe``; the model's ``recipe`` names it |
| run-folder file                           | ``pyro_lvm.runs``                                            |
"""
