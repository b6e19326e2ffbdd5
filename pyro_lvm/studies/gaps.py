"""The Cremer et al. (2018) decomposition of inference suboptimality on one trained decoder, per datapoint:

    log p(x) ≈ log p̂(x)                       (IWAE, K samples; proposal q*_Gaussian, q (, q*_flow) in equal parts)
    approximation gap = log p̂(x) − L[q*_F]     (the limit of the trained guide's family F)
    amortization gap  = L[q*_F] − L[q]          (the encoder's shortfall against the best q in F per datapoint)

F is the Gaussian family for the Gaussian guides and the flow family for ``amortized_flow``. With
``compare.qstar_families = ["gaussian", "flow"]`` both q* are fitted on the same points and decoder (the flow from
q*_Gaussian), and the Gaussian approximation gap splits into the part a flow recovers, L[q*_flow] − L[q*_Gaussian],
and what is left after it, log p̂(x) − L[q*_flow].
"""

from __future__ import annotations

import torch

from pyro_lvm.config import Config
from pyro_lvm.context import scoped
from pyro_lvm.evaluation.estimates import (
    Estimate,
    estimates_from_q,
    guide_distribution,
    mixture_log_px,
    particle_bytes,
    prior_proposal,
)
from pyro_lvm.evaluation.local_inference import fit_local, fit_local_flow
from pyro_lvm.guides import refine
from pyro_lvm.registry import GUIDES
from pyro_lvm.resources import require
from pyro_lvm.seeding import seeded, stream_seed
from pyro_lvm.studies.compare_report import gap_warnings

# q* is fitted for up to this many rows at once: the fit's stopping rule looks at the block's mean ELBO, and its
# memory is QSTAR_SAMPLES x block x (P + decoder widths) floats (~31 MB of pixels at 784 pixels); check_memory.
QSTAR_BLOCK = 1000
QSTAR_SAMPLES = 10  # draws per step of the q* fit (fit_local's default)
MOMENT_SAMPLES = 1000  # draws of a flow q for its mean and standard deviation


def check_memory(cfg: Config, model, x: torch.Tensor) -> None:
    """compare's two peaks against the device's memory, before anything trains: the q* fit of one block (up to
    QSTAR_BLOCK rows at once) and the estimates of one batch of points (eval.chunk_size draws of eval.batch_size
    points; compare.elbo_samples is drawn in chunks of at most eval.chunk_size)."""
    unit = particle_bytes(model, x)
    block = min(QSTAR_BLOCK, len(x), max(cfg.compare.gap_points, cfg.eval.num_points or len(x)))
    require(
        4 * QSTAR_SAMPLES * block * unit,  # x4: the fit's forward values kept for its backward pass
        f"fitting q* to {block:,} points at once ({QSTAR_SAMPLES} draws each)",
        "lower compare.gap_points and eval.num_points, or the decoder's widths",
        x.device,
    )
    require(
        cfg.eval.chunk_size * min(cfg.eval.batch_size, len(x)) * unit,
        f"estimates with eval.chunk_size = {cfg.eval.chunk_size:,} draws for eval.batch_size = {cfg.eval.batch_size:,} "
        "points",
        "lower eval.chunk_size or eval.batch_size (the estimates are the same; memory is chunk x batch)",
        x.device,
    )


def refinement_lr(cfg: Config) -> float:
    """compare.refine_lr, else the semi-amortized guide's refine_lr (guide_options, then [guide]), else its default."""
    if cfg.compare.refine_lr is not None:
        return cfg.compare.refine_lr
    semi = cfg.compare.guide_options.get("semi_amortized", {})
    default = GUIDES.schema("semi_amortized").model_fields["refine_lr"].default
    return semi.get("refine_lr", getattr(cfg.guide, "refine_lr", default))


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def block_chunks(n: int, size: int):
    """Slices of at most ``size`` rows that never cross a QSTAR_BLOCK boundary (a local flow belongs to one block)."""
    for block in chunks(n, QSTAR_BLOCK):
        for sl in chunks(block.stop - block.start, size):
            yield slice(block.start + sl.start, block.start + sl.stop)


def rows(c, sl):
    return None if c is None else c[sl]


def normal(loc, scale):
    import pyro.distributions as dist

    return dist.Normal(loc.detach(), scale.detach()).to_event(1)


def fit_qstar(model, cc, x, c, init_loc, init_scale) -> tuple[torch.Tensor, torch.Tensor, list]:
    """q* = N(loc, scale) per row, fitted in blocks of QSTAR_BLOCK rows; returns (loc, scale, fits)."""
    locs, scales, fits = [], [], []
    for sl in chunks(x.shape[0], QSTAR_BLOCK):
        fit = fit_local(
            model, x[sl], rows(c, sl), init_loc[sl], init_scale[sl], cc.qstar_lr, cc.qstar_max_steps,
            cc.qstar_window, cc.qstar_tol,
        )  # fmt: skip
        locs.append(fit.loc)
        scales.append(fit.scale)
        fits.append(fit)
    return torch.cat(locs), torch.cat(scales), fits


def fit_qstar_flow(model, cc, x, c, loc, scale, guide=None) -> list:
    """q*_flow per block of QSTAR_BLOCK rows, each started at the rows' q*_Gaussian (loc, scale) under identity
    transforms, or, given a flow ``guide``, at the guide's own q (its base, context and a copy of its transforms)."""
    f, fits = cc.qstar_flow, []
    schedule = dict(lr=cc.qstar_lr, max_steps=cc.qstar_max_steps, window=cc.qstar_window, tol=cc.qstar_tol)
    shape = dict(flows=f.flows, kind=f.kind, hidden=f.hidden, context_dim=f.context_dim)
    for sl in chunks(x.shape[0], QSTAR_BLOCK):
        xs, cs = x[sl], rows(c, sl)
        if guide is None:
            fits.append(fit_local_flow(model, xs, cs, loc[sl], scale[sl], **shape, **schedule))
            continue
        with torch.no_grad():
            base_loc, base_scale, context = guide.encode_base(xs, cs)
        start = dict(init_flows=guide.flows, init_context=context)
        fits.append(fit_local_flow(model, xs, cs, base_loc, base_scale, **shape, **schedule, **start))
    return fits


@torch.no_grad()
def guide_params(guide, x, c, idx=None, num_data=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian guide's (loc, scale) for every row, QSTAR_BLOCK rows at a time (the semi-amortized guide refines
    each block); for a flow guide, the mean and standard deviation of q (``MOMENT_SAMPLES`` draws from a seeded
    stream of its own): the Gaussian closest to q by moments, where q*_Gaussian starts with qstar_init = 'encoder'
    (the flow's base is not: the transforms move it)."""
    locs, scales = [], []
    for sl in chunks(x.shape[0], QSTAR_BLOCK):
        if hasattr(guide, "distribution"):
            with seeded(0):
                z = guide.distribution(x[sl], rows(c, sl)).sample((MOMENT_SAMPLES,))  # (S, B, D)
            loc, scale = z.mean(0), z.std(0)
        else:
            q = guide_distribution(guide, x[sl], rows(c, sl), None if idx is None else idx[sl], num_data)
            loc, scale = q.base_dist.loc, q.base_dist.scale
        locs.append(loc)
        scales.append(scale)
    return torch.cat(locs), torch.cat(scales)


def guide_rows(guide, x, c, idx=None, num_data=None):
    """rows -> q(z | x[rows]): a flow guide's distribution per call; a Gaussian guide's (loc, scale) computed once
    (``guide_params``), so the semi-amortized refinement sees the same blocks whatever the evaluation batch."""
    if hasattr(guide, "distribution"):

        @torch.no_grad()
        def flow(sl):
            return guide.distribution(x[sl], rows(c, sl))

        return flow
    loc, scale = guide_params(guide, x, c, idx, num_data)
    return lambda sl: normal(loc[sl], scale[sl])


def ais_pieces(exp, ev, x, c, qs_loc, qs_scale, iwae: torch.Tensor) -> dict:
    """``eval.estimator = "ais"``: log p̂(x) by AIS from q*_Gaussian (or, with ``eval.ais.start = "prior"``, from
    p(z | c)) on the same points, the IWAE figure beside it, and the BDMC bracket on ``eval.ais.bdmc_points`` points
    simulated from the same decoder (started at the guide's q of the simulated x)."""
    from pyro_lvm.evaluation.ais import ais_rows, bdmc_split

    def start_rows(sl):
        if ev.ais.start == "prior":
            return prior_proposal(exp.model, x[sl], rows(c, sl))
        return normal(qs_loc[sl], qs_scale[sl])

    with seeded(stream_seed(ev.seed, "ais")):  # its own stream: independent of what drew before it
        log_px, acc = ais_rows(exp.model, start_rows, x, c, ev)
    out = {"log_px": Estimate(log_px), "iwae_log_px": Estimate(iwae), "log_px_estimator": "ais", "ais_acceptance": acc}
    if ev.ais.bdmc_points:
        b = bdmc_split(exp.model, exp.guide, exp.data.train, exp.condition, ev, exp.amortized)
        # the simulated points have no q* of their own: their chains start at the guide's q (or the prior), so the
        # bracket bounds log p(x) there, not the error of a schedule started at q* (the label says which)
        start = b["start"] if b["start"] == "prior" or ev.ais.start == "prior" else "guide, not q* as the AIS above"
        out |= {"bdmc_lower": b["lower"], "bdmc_upper": b["upper"], "bdmc_gap": b["gap"], "bdmc_start": start}
    return out


@scoped
def gap_decomposition(exp, cfg: Config) -> dict:
    """On ``exp``'s amortized decoder: L[q], L[q*] (Gaussian; and flow where asked), log p̂(x) and the gaps for
    ``compare.gap_points`` training points; for Gaussian guides also L[q_K], the encoder refined K steps
    (semi-amortized inference at test time).

    log p̂(x) is AIS where ``eval.estimator = "ais"`` (``ais_pieces``: the IWAE figure beside it, the BDMC bracket on
    simulated data), else IWAE with the defensive mixture of q*_Gaussian, q and, where fitted, q*_flow as proposal
    (``DefensiveMixture``, equal parts): unbiased weights, no choice between proposals per datapoint (a flow scores
    the other components' draws through its exact inverse).
    Estimates run ``eval.batch_size`` points at a time, so peak memory is bounded by max(eval.chunk_size,
    compare.elbo_samples) x eval.batch_size x (P + decoder widths) floats, plus the q* fit's block
    (``QSTAR_BLOCK``), whatever ``gap_points`` is."""
    cc, ev = cfg.compare, cfg.eval
    flow_guide = hasattr(exp.guide, "distribution")
    refine_lr = refinement_lr(cfg)
    split = exp.data.train.head(cc.gap_points)
    x, c = exp.condition(split.x, split.y)
    torch.manual_seed(ev.seed)
    loc, scale = guide_params(exp.guide, x, c)
    q_rows = guide_rows(exp.guide, x, c) if flow_guide else (lambda sl: normal(loc[sl], scale[sl]))
    if cc.qstar_init == "zero":
        qs_loc, qs_scale, fits = fit_qstar(exp.model, cc, x, c, torch.zeros_like(loc), torch.ones_like(scale))
    else:
        qs_loc, qs_scale, fits = fit_qstar(exp.model, cc, x, c, loc, scale)
    flow_fits = []
    if "flow" in cc.qstar_families:  # a flow guide's own family starts at its q (qstar_init = 'encoder')
        start_guide = exp.guide if flow_guide and cc.qstar_init == "encoder" else None
        flow_fits = fit_qstar_flow(exp.model, cc, x, c, qs_loc, qs_scale, start_guide)
    L_q, L_qstar, L_flow, log_px = [], [], [], []
    refined: dict[int, list[torch.Tensor]] = {k: [] for k in ([] if flow_guide else cc.refine_ks)}
    elbo_chunk = min(cc.elbo_samples, ev.chunk_size)
    for sl in block_chunks(len(split), ev.batch_size):
        xs, cs = x[sl], rows(c, sl)
        q_s, qstar_s = q_rows(sl), normal(qs_loc[sl], qs_scale[sl])
        L_q.append(estimates_from_q(exp.model, q_s, xs, cs, cc.elbo_samples, elbo_chunk)[1])
        L_qstar.append(estimates_from_q(exp.model, qstar_s, xs, cs, cc.elbo_samples, elbo_chunk)[1])
        proposals = [qstar_s, q_s]
        if flow_fits:
            fit = flow_fits[sl.start // QSTAR_BLOCK]
            local = slice(sl.start % QSTAR_BLOCK, sl.start % QSTAR_BLOCK + (sl.stop - sl.start))
            q_flow = fit.distribution(local)
            L_flow.append(estimates_from_q(exp.model, q_flow, xs, cs, cc.elbo_samples, elbo_chunk)[1])
            proposals.append(q_flow)
        log_px.append(mixture_log_px(exp.model, proposals, xs, cs, ev.num_samples, ev.chunk_size))
        for k in refined:
            lk, sk = refine(exp.model, xs, cs, loc[sl], scale[sl], k, refine_lr, "none")
            refined[k].append(estimates_from_q(exp.model, normal(lk, sk), xs, cs, cc.elbo_samples, elbo_chunk)[1])
    L_q, L_qstar, log_px = torch.cat(L_q), torch.cat(L_qstar), torch.cat(log_px)
    ais = ais_pieces(exp, ev, x, c, qs_loc, qs_scale, log_px) if ev.estimator == "ais" else {}
    log_px = ais["log_px"].values if ais else log_px
    best = torch.cat(L_flow) if flow_guide else L_qstar  # q* of the trained guide's family
    refined_est = {k: Estimate(torch.cat(v)) for k, v in refined.items()}
    amort = best - L_q
    out_family = "flow" if flow_guide else "gaussian"
    out = {
        "family": out_family,
        "L_q": Estimate(L_q),
        "L_qstar": Estimate(L_qstar),
        "log_px": Estimate(log_px),
        "approximation_gap": Estimate(log_px - best),
        "amortization_gap": Estimate(amort),
        "qstar_steps": max(f.steps for f in fits),
        "qstar_converged": all(f.converged for f in fits),
        "refined": refined_est,
        "share_closed": {k: float((v.values - L_q).mean() / amort.mean()) for k, v in refined_est.items()},
        "warnings": gap_warnings(
            Estimate(L_q), Estimate(best), {"gaussian": fits, "flow": flow_fits}, QSTAR_BLOCK, cc, out_family
        ),
    }
    out |= ais
    if flow_fits:
        L_flow = torch.cat(L_flow)
        out |= {
            "L_qstar_flow": Estimate(L_flow),
            "flow_recovers": Estimate(L_flow - L_qstar),  # the part of the Gaussian approximation gap a flow closes
            "left_after_flow": Estimate(log_px - L_flow),
            "qstar_flow_steps": max(f.steps for f in flow_fits),
            "qstar_flow_converged": all(f.converged for f in flow_fits),
        }
    return out
