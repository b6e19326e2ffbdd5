"""Annealed importance sampling (AIS, Neal 2001) of log p(x | c) per datapoint, and bidirectional Monte Carlo (BDMC,
Grosse et al. 2015; for VAE decoders Wu et al. 2017), with HMC transitions (``hmc.py``).

The geometric path from a start q(z) (the guide's q(z | x, c), or the prior p(z | c)) to the posterior:

    f_β(z) = q(z)^(1-β) p(x, z | c)^β,   0 = β_0 < β_1 < ... < β_T = 1,   Z_0 = 1,  Z_T = p(x | c).

Each of C chains draws z_0 ~ q, then for t = 1..T adds log f_t(z_{t-1}) − log f_(t-1)(z_{t-1}) =
(β_t − β_(t-1)) [log p(x, z_(t-1)) − log q(z_(t-1))] to its log weight and moves z by one HMC transition that leaves
f_t invariant (none after the last). E[w] = p(x) for every chain, so

    log p̂_AIS(x) = logsumexp_c log w_c − log C        (a stochastic lower bound: E[log p̂] ≤ log p(x)).

BDMC, on data simulated from the model ((z, x) ~ p(z) p(x | z)): z is an exact posterior draw for its x, so the
same chain run backwards (β from 1 to 0, started at z) has E[w_rev] = 1 / p(x), and

    log p̂_rev(x) = −(logsumexp_c log w_rev,c − log C)  (a stochastic upper bound: E[log p̂_rev] ≥ log p(x)).

The two bracket log p(x) of the simulated points; their gap bounds the forward estimate's error there, and so
tells whether the schedule is long enough for real data of the same decoder.

Schedule (``schedule``): ``sigmoid`` (Grosse et al.) spaces β_t = (σ(δ(2t/T − 1)) − σ(−δ)) / (σ(δ) − σ(−δ)), dense
at both ends where f_β changes fastest; ``linear`` spaces them evenly. HMC runs in the start's scale (a diagonal
mass matrix diag(1/s²) with s the start's standard deviation per datapoint: fixed, so every transition keeps its
f_t invariant) with ``leapfrog`` steps of size ε_t per datapoint and level. The step sizes are tuned by a pilot run
of the same schedule on chains of its own (a quarter of C, at least 2), whose ε adapts towards ``target_accept``
(the mean acceptance over the datapoint's chains, × 1.02 or × 0.98 per transition, as in Wu et al.'s code); its
weights are discarded. The weighted chains then run with that schedule of ε_t fixed in advance, and the reverse
chain with the same ε_t in reverse order. Adapting on the weighted chains' own acceptances (as Wu et al.'s code
does) makes each kernel depend on the chains' past, and the weights are then no longer unbiased: on a
linear-Gaussian model with one chain per point it moved log E[w] by +0.17 nats and the reverse bound by −0.25, enough
to turn a BDMC bracket negative (tests/test_ais.py pools the weights of one replicated point to check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import poutine

from pyro_lvm.errors import PyroLVMError
from pyro_lvm.evaluation.estimates import Estimate, guide_distribution, particle_bytes, prior_proposal
from pyro_lvm.evaluation.hmc import adapt_step_size, hmc_transition, state_at
from pyro_lvm.guides import log_joint_per_datapoint
from pyro_lvm.resources import require
from pyro_lvm.seeding import seeded, stream_seed

SCALE_SAMPLES = 256  # draws of a start distribution without a closed-form standard deviation (flows)


def schedule(num_steps: int, kind: str = "sigmoid", delta: float = 4.0) -> list[float]:
    """β_0 = 0 < ... < β_T = 1 (T = ``num_steps``): ``sigmoid`` or ``linear`` (module docstring)."""
    t = torch.linspace(-1.0, 1.0, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        s = t
    elif kind == "sigmoid":
        s = torch.sigmoid(delta * t)
    else:
        raise PyroLVMError(f"unknown AIS schedule {kind!r}; use 'sigmoid' or 'linear'")
    betas = ((s - s[0]) / (s[-1] - s[0])).tolist()
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def start_scale(q, seed: int = 0) -> torch.Tensor:
    """The start distribution's standard deviation per datapoint, (B, D): closed form where it has one, else that
    of ``SCALE_SAMPLES`` draws from a seeded stream of its own (the evaluation's stream is untouched)."""
    try:
        scale = q.stddev
    except NotImplementedError:
        with seeded(seed):
            scale = q.sample((SCALE_SAMPLES,)).std(0)
    return scale.detach().clamp_min(1e-6)


def path_parts(model, q, x, c) -> Callable:
    """z (C, B, D) -> (log q(z), log p(x, z | c)), each (C, B): the two ends of the path."""

    def parts(z):
        return q.log_prob(z), log_joint_per_datapoint(model, x, c, z)

    return parts


def anneal(
    parts, z: torch.Tensor, betas: list[float], scale: torch.Tensor, opts, step_sizes: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, float, list[torch.Tensor]]:
    """Run C chains from z (C, B, D) along ``betas`` (increasing: forward AIS; decreasing: the reverse chain):
    returns each chain's log weight Σ_t (β_t − β_(t-1)) [log p − log q] (C, B), the mean acceptance rate (NaN
    without transitions) and the step sizes used, one (B,) per transition. ``step_sizes`` fixes them in advance
    (valid AIS weights); None adapts them as the chains go (a pilot run: ``tuned_step_sizes``)."""
    state = state_at(parts, z)
    log_w = torch.zeros_like(state.log_p)
    eps = torch.full(z.shape[1:2], float(opts.step_size), dtype=z.dtype, device=z.device)  # (B,)
    accepted, used = 0.0, []
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]) * (state.log_p - state.log_q)
        if t < len(betas) - 1:
            eps = eps if step_sizes is None else step_sizes[t - 1]
            state, prob = hmc_transition(parts, state, betas[t], eps, scale, opts.leapfrog)
            used.append(eps)
            if step_sizes is None:
                eps = adapt_step_size(eps, prob, opts.target_accept)
            accepted += float(prob.mean())
    return log_w, accepted / len(used) if used else math.nan, used


def tuned_step_sizes(parts, q, betas: list[float], scale: torch.Tensor, opts) -> list[torch.Tensor]:
    """The step sizes per transition of a pilot run from q with adaptation, on max(2, C // 4) chains of its own
    (its weights are discarded: see the module docstring)."""
    return anneal(parts, q.sample((max(2, opts.chains // 4),)), betas, scale, opts)[2]


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


@torch.no_grad()
def ais_log_px(model, q, x, c, opts) -> tuple[torch.Tensor, float]:
    """log p̂_AIS(x | c) per datapoint (B,) from ``opts.chains`` chains started at q (batch (B,), event (D,)),
    and the mean HMC acceptance rate."""
    parts, scale = path_parts(model, q, x, c), start_scale(q)
    betas = schedule(opts.steps, opts.schedule, opts.sigmoid_delta)
    sizes = tuned_step_sizes(parts, q, betas, scale, opts)
    log_w, acc, _ = anneal(parts, q.sample((opts.chains,)), betas, scale, opts, sizes)  # (C, B) weights
    return log_mean_exp(log_w), acc


@torch.no_grad()
def simulate(model, c: torch.Tensor | None, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` draws (x, z) of the model's joint: z ~ p(z | c), x ~ p(x | z, c) (its own sites ``z`` and ``x``)."""
    with poutine.block():
        trace = poutine.trace(model).get_trace(None, c, batch_size=None if c is not None else num)
    return trace.nodes["x"]["value"], trace.nodes["z"]["value"]


@torch.no_grad()
def bdmc(model, start: Callable, c: torch.Tensor | None, num: int, opts) -> dict:
    """BDMC on ``num`` points simulated from the model (given the conditions c, (num, C) or None): the forward AIS
    lower bound, the reverse chain's upper bound from the exact posterior draws, each (num,), the mean acceptance
    rates and the simulated x (num, P). ``start(x, c)`` gives the start distribution (batch (num,))."""
    x, z_true = simulate(model, c, num)
    q = start(x, c)
    parts, scale = path_parts(model, q, x, c), start_scale(q)
    betas = schedule(opts.steps, opts.schedule, opts.sigmoid_delta)
    sizes = tuned_step_sizes(parts, q, betas, scale, opts)
    log_w, acc_fwd, _ = anneal(parts, q.sample((opts.chains,)), betas, scale, opts, sizes)
    z_rev = z_true.expand(opts.chains, *z_true.shape)
    log_w_rev, acc_rev, _ = anneal(parts, z_rev, betas[::-1], scale, opts, sizes[::-1])  # level t keeps its ε_t
    return {
        "lower": log_mean_exp(log_w),
        "upper": -log_mean_exp(log_w_rev),
        "acceptance": (acc_fwd, acc_rev),
        "x": x,
    }


def points_per_call(ev) -> int:
    """Datapoints whose C chains run in one call: as many rows (chains x points) as IWAE's chunk x batch."""
    return max(1, ev.chunk_size * ev.batch_size // ev.ais.chains)


def refuse_unsupported(model) -> None:
    """M2 (a discrete label beside z) in one line: the config check refuses it too, this for direct calls."""
    if getattr(model, "recipe", None) == "semi_supervised":
        raise PyroLVMError(
            "eval.estimator = 'ais' anneals a continuous z with HMC; model 'm2' also has the discrete label y: use "
            "eval.estimator = 'iwae' (its evaluation sums y out)"
        )


def ais_rows(model, start_rows: Callable, x, c, ev) -> tuple[torch.Tensor, float]:
    """AIS log p̂(x | c) for every row of x (N,), ``points_per_call`` rows at a time, each run started at
    ``start_rows(rows)`` (a slice of rows -> its start distribution); and the mean acceptance rate."""
    opts, per_call = ev.ais, points_per_call(ev)
    require(
        4 * opts.chains * min(per_call, len(x)) * particle_bytes(model, x),
        f"AIS with eval.ais.chains = {opts.chains} for {per_call} points at once",
        "lower eval.chunk_size or eval.batch_size (points per call = chunk x batch / chains)",
        x.device,
    )
    values, accepted = [], 0.0
    for first in range(0, len(x), per_call):
        sl = slice(first, min(len(x), first + per_call))
        lp, acc = ais_log_px(model, start_rows(sl), x[sl], None if c is None else c[sl], opts)
        values.append(lp)
        accepted += acc * len(lp)
    return torch.cat(values), accepted / len(x)


def ais_split(model, guide, split, condition, ev, num_data: int | None = None) -> dict:
    """AIS log p̂(x) for the first ``ev.num_points`` rows of ``split``, started at the guide's q (``num_data``: a
    per-datapoint guide's rows, read by index) or, with ``ev.ais.start = "prior"``, at p(z | c); one seeded stream
    (``ev.seed``). Returns {"log_px": Estimate, "acceptance": float}."""
    refuse_unsupported(model)
    points = split.head(ev.num_points)
    x, c = condition(points.x, points.y)
    idx = torch.arange(len(points), device=x.device)

    def start_rows(sl):
        cs = None if c is None else c[sl]
        if ev.ais.start == "prior":
            return prior_proposal(model, x[sl], cs)
        return guide_distribution(guide, x[sl], cs, idx[sl] if num_data else None, num_data)

    with seeded(ev.seed):
        log_px, acc = ais_rows(model, start_rows, x, c, ev)
    return {"log_px": Estimate(log_px), "acceptance": acc}


def bdmc_split(model, guide, split, condition, ev, amortized: bool = True) -> dict:
    """BDMC on ``ev.ais.bdmc_points`` points simulated from the model, with the conditions of ``split``'s first rows
    (CVAE: as many points as rows) or none (VAE); started at the guide's q of the simulated x where the guide has
    one for new points (``amortized``), else at the prior; its own seeded stream. Returns lower, upper and gap
    (Estimates), the start used and the forward and reverse acceptance rates."""
    refuse_unsupported(model)
    points = split.head(ev.ais.bdmc_points)
    _, c = condition(points.x, points.y)
    use_guide = ev.ais.start == "guide" and amortized
    total, per_call = (len(points) if c is not None else ev.ais.bdmc_points), points_per_call(ev)

    def start(x, c):
        return guide_distribution(guide, x, c) if use_guide else prior_proposal(model, x, c)

    lower, upper, accs = [], [], []
    with seeded(stream_seed(ev.seed, "bdmc")):
        for first in range(0, total, per_call):
            n = min(per_call, total - first)
            out = bdmc(model, start, None if c is None else c[first : first + n], n, ev.ais)
            lower.append(out["lower"])
            upper.append(out["upper"])
            accs.append([a * n for a in out["acceptance"]])
    lower, upper = torch.cat(lower), torch.cat(upper)
    return {
        "lower": Estimate(lower),
        "upper": Estimate(upper),
        "gap": Estimate(upper - lower),
        "start": "guide" if use_guide else "prior",
        "acceptance": [sum(a[i] for a in accs) / total for i in range(2)],
    }


def ais_evaluation(model, guide, split, condition, ev, num_data: int | None = None, amortized: bool = True) -> dict:
    """What ``pyro-lvm evaluate`` adds under ``eval.estimator = "ais"`` (JSON-ready): AIS log p̂(x) on the same
    points as IWAE, its settings and acceptance rate, and the BDMC bracket on ``eval.ais.bdmc_points`` simulated
    points (lower, upper, gap = upper − lower)."""
    opts = ev.ais
    ais = ais_split(model, guide, split, condition, ev, num_data)
    out = {
        "ais_log_px": ais["log_px"].as_dict(),
        "ais": {
            "chains": opts.chains,
            "steps": opts.steps,
            "schedule": opts.schedule,
            "leapfrog": opts.leapfrog,
            "start": opts.start,
            "acceptance": ais["acceptance"],
        },  # fmt: skip
    }
    if opts.bdmc_points:
        b = bdmc_split(model, guide, split, condition, ev, amortized)
        out["bdmc"] = {k: (v.as_dict() if isinstance(v, Estimate) else v) for k, v in b.items()}
    return out
