"""The few ArviZ calls we make, on ArviZ 0.x (InferenceData, ``az.psislw``) and 1.x (xarray DataTree, PSIS in
``arviz_stats``) alike. pip resolves 1.x on Python >= 3.12 and 0.23 on 3.11; both are tested.

- ``posterior_from_dict``: the posterior container of the installed ArviZ: ``az.InferenceData`` on 0.x,
  ``xarray.DataTree`` on 1.x. Both give ``obj.posterior["z"]`` with dims (chain, draw, *dims["z"]), and
  ``az.rhat(obj)["z"]`` / ``az.ess(obj, method="bulk")["z"]`` work on either, so those need no shim.
- ``psis_khat``: Pareto k̂ of importance weights w_s = exp(log_w_s), samples on the last axis. The two APIs take
  opposite signs: 0.x ``az.psislw(log_w)`` smooths exp(log_w); 1.x ``array_stats.psislw(a)`` follows the LOO
  convention (``a`` is a log-likelihood, the weights are exp(-a)), so we pass ``-log_w``. Tail sizes differ
  by one draw at most (0.x: ceil(min(S/5, 3 sqrt(S))); 1.x: the floor of the same), so k̂ agrees to fitting noise
  (40 Pareto rows of 4000 draws, k = 0.2/0.5/0.9: mean k̂ 0.2297/0.5145/0.8948 on 0.23.4, 0.2294/0.5140/0.8941 on 1.3).
  Few draws: 0.x returns k̂ = inf below 21 draws (a tail under 5), 1.x raises below 25 and returns NaN from 25 to 29
  (its fit needs a tail of 6: the tail's first quartile must exceed its minimum). So both refuse below
  ``MIN_PSIS_DRAWS`` = 30 draws (a tail of 6 on both lines) with a ``PyroLVMError``. A row whose tail weights are all
  equal has no tail to fit (0.x: inf, 1.x raises), and one with an infinite or NaN weight has no finite moment (0.x:
  inf, 1.x: NaN for +inf): k̂ = inf for both on both lines (unreliable).
"""

from __future__ import annotations

import warnings

import numpy as np

from pyro_lvm.errors import PyroLVMError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.2x announces its 1.0 refactor on import
    import arviz as az

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1

if ARVIZ_1:
    from arviz_stats.base import array_stats
    from xarray import DataTree as Posterior
else:
    Posterior = az.InferenceData

__all__ = ["ARVIZ_1", "MIN_PSIS_DRAWS", "Posterior", "az", "posterior_from_dict", "psis_khat"]

# The fewest draws whose k̂ both ArviZ lines fit: their tails are ceil (0.x) and floor (1.x) of S/5 draws, and 1.x's
# fit returns NaN on a tail of 5 (its first quartile is the tail's minimum), so both need S/5 >= 6.
MIN_PSIS_DRAWS = 30


def posterior_from_dict(posterior: dict[str, np.ndarray], dims: dict[str, list[str]]) -> Posterior:
    """Arrays (chain, draw, ...) -> the installed ArviZ's posterior container with a ``posterior`` group."""
    if ARVIZ_1:
        return az.from_dict({"posterior": posterior}, dims=dims)
    return az.from_dict(posterior=posterior, dims=dims)


def psis_khat(log_w: np.ndarray) -> np.ndarray:
    """Pareto k̂ of the weights exp(``log_w``) along the last axis (ArviZ's PSIS, r_eff = 1): (..., S) -> (...).
    Fewer than ``MIN_PSIS_DRAWS`` draws is a ``PyroLVMError``; a row whose tail weights are all equal, or with an
    infinite or NaN weight, gives inf."""
    draws = log_w.shape[-1]
    if draws < MIN_PSIS_DRAWS:
        raise PyroLVMError(
            f"PSIS k-hat of {draws} draws per row: its Pareto tail is the largest fifth of the draws and needs 6 of "
            f"them; draw at least {MIN_PSIS_DRAWS} importance samples"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns per row when k̂ > 0.7; callers report k̂ themselves
        if not ARVIZ_1:
            khat = np.asarray(az.psislw(log_w, reff=1.0)[1], dtype=float)
        else:
            try:
                khat = np.asarray(array_stats.psislw(-log_w, r_eff=1.0, axis=-1)[1], dtype=float)
            except ValueError:  # "All tail values are the same" in some row: fit the rows one by one
                rows = log_w.reshape(-1, draws)
                khat = np.array([_row_khat_1x(row) for row in rows], dtype=float).reshape(log_w.shape[:-1])
    # An infinite or NaN weight: 0.x says inf, 1.x NaN for +inf; the weights have no finite moment either way.
    return np.where(np.isnan(log_w).any(-1) | np.isposinf(log_w).any(-1), np.inf, khat)


def _row_khat_1x(log_w: np.ndarray) -> float:
    """One row's k̂ on ArviZ 1.x; a tail of equal weights is inf, as on 0.x (where nothing above the cutoff remains
    to fit)."""
    try:
        return float(array_stats.psislw(-log_w, r_eff=1.0, axis=-1)[1])
    except ValueError as e:
        if "All tail values are the same" not in str(e):
            raise
        return float("inf")
