"""The few ArviZ calls we make, on ArviZ 0.x (InferenceData, ``az.psislw``) and 1.x (xarray DataTree, PSIS in
``arviz_stats``) alike. pip resolves 1.x on Python >= 3.12 and 0.23 on 3.11; both are tested.

- ``posterior_from_dict``: the posterior container of the installed ArviZ: ``az.InferenceData`` on 0.x,
  ``xarray.DataTree`` on 1.x. Both give ``obj.posterior["z"]`` with dims (chain, draw, *dims["z"]), and
  ``az.rhat(obj)["z"]`` / ``az.ess(obj, method="bulk")["z"]`` work on either, so those need no shim.
- ``psis_khat``: Pareto k̂ of importance weights w_s = exp(log_w_s), samples on the last axis. The two APIs take
  opposite signs: 0.x ``az.psislw(log_w)`` smooths exp(log_w); 1.x ``array_stats.psislw(a)`` follows the LOO
  convention (``a`` is a log-likelihood, the weights are exp(-a)), so we pass ``-log_w``. Tail sizes differ
  slightly (0.x: ceil(min(S/5, 3 sqrt(S))); 1.x: floor(3 sqrt(S)) for S > 225), so k̂ agrees to fitting noise
  (40 Pareto rows of 4000 draws, k = 0.2/0.5/0.9: mean k̂ 0.2297/0.5145/0.8948 on 0.23.4, 0.2294/0.5140/0.8941 on 1.3).
"""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.2x announces its 1.0 refactor on import
    import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1

if ARVIZ_1:
    from arviz_stats.base import array_stats
    from xarray import DataTree as Posterior
else:
    Posterior = az.InferenceData

__all__ = ["ARVIZ_1", "Posterior", "az", "posterior_from_dict", "psis_khat"]


def posterior_from_dict(posterior: dict[str, np.ndarray], dims: dict[str, list[str]]) -> Posterior:
    """Arrays (chain, draw, ...) -> the installed ArviZ's posterior container with a ``posterior`` group."""
    if ARVIZ_1:
        return az.from_dict({"posterior": posterior}, dims=dims)
    return az.from_dict(posterior=posterior, dims=dims)


def psis_khat(log_w: np.ndarray) -> np.ndarray:
    """Pareto k̂ of the weights exp(``log_w``) along the last axis (ArviZ's PSIS, r_eff = 1): (..., S) -> (...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns per row when k̂ > 0.7; callers report k̂ themselves
        if ARVIZ_1:
            _, khat = array_stats.psislw(-log_w, r_eff=1.0, axis=-1)
        else:
            _, khat = az.psislw(log_w, reff=1.0)
    return np.asarray(khat, dtype=float)
