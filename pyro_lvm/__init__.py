"""pyro_lvm: latent variable models on Pyro, with swappable guides and amortized vs non-amortized comparison.

The house, top to bottom (a layer imports only the layers below it; ``.importlinter`` checks this in CI):

    cli            argument parsing, printing, exit codes
    api            the public Python functions re-exported here (train, evaluate, compare, sample, ...)
    studies        compare, CVAE studies, ELBO identity, KL directions, evaluation and figures of run folders
    training       the experiment, run state, loop, step strategies (single, chunked/DDP), callbacks, recipes
    evaluation     per-datapoint ELBO / IWAE estimates, gap pieces, the test-time q* fit, ArviZ diagnostics
    infer          objectives (ELBOs, Rényi, M2's enumeration) and optimisers
    guides         amortized, per-datapoint, semi-amortized, flow and M2 guides
    models         VAE / CVAE / M2 programs, priors, likelihoods, the completion baseline
    data | nn | runs   datasets, batches, conditions | plain torch networks | run-folder files, checkpoints, lock
    config         the TOML schema; asks the registries for component names, option schemas and traits
    registry | context | seeding | resources | errors    the ground floor

Components register by name in ``registry`` with their own option schemas; the registries import the built-in
component modules by name on first use, and a user's modules through ``plugins``. Importing ``pyro_lvm`` imports
none of this: the names below load on first access, and no global setting of Pyro or torch is changed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access: `import pyro_lvm` and `pyro-lvm --help` stay fast)
_PUBLIC = {
    "Config": "pyro_lvm.config",
    "load_config": "pyro_lvm.api",
    "config_from_dict": "pyro_lvm.api",
    "with_overrides": "pyro_lvm.api",
    "Experiment": "pyro_lvm.training.experiment",
    "Dataset": "pyro_lvm.data",
    "Split": "pyro_lvm.data",
    "from_tensors": "pyro_lvm.data",
    "train": "pyro_lvm.api",
    "load": "pyro_lvm.api",
    "evaluate": "pyro_lvm.api",
    "compare": "pyro_lvm.api",
    "sample": "pyro_lvm.api",
    "encode": "pyro_lvm.evaluation.analysis",
    "reconstruct": "pyro_lvm.evaluation.analysis",
    "interpolate": "pyro_lvm.evaluation.analysis",
    "traverse": "pyro_lvm.evaluation.analysis",
    "posterior_predictive": "pyro_lvm.evaluation.analysis",
    "Encoding": "pyro_lvm.evaluation.analysis",
    "Options": "pyro_lvm.registry",
    "register_dataset": "pyro_lvm.registry",
    "register_network": "pyro_lvm.registry",
    "register_prior": "pyro_lvm.registry",
    "register_likelihood": "pyro_lvm.registry",
    "register_model": "pyro_lvm.registry",
    "register_guide": "pyro_lvm.registry",
    "register_elbo": "pyro_lvm.registry",
    "register_optimiser": "pyro_lvm.registry",
    "scope": "pyro_lvm.context",
    "row_adam": "pyro_lvm.infer.optim",
    "LazyAdam": "pyro_lvm.infer.optim",
    "PyroLVMError": "pyro_lvm.errors",
    "Interrupted": "pyro_lvm.errors",
    "Callback": "pyro_lvm.training.callbacks.base",
    "Strategy": "pyro_lvm.training.strategies.base",
    "register_strategy": "pyro_lvm.training.strategies",
    "Recipe": "pyro_lvm.training.recipes",
    "register_recipe": "pyro_lvm.training.recipes",
    "RunState": "pyro_lvm.training.state",
}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyro_lvm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
