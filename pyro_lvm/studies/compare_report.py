"""What ``pyro-lvm compare`` prints: the method table, the gap decomposition and what makes it untrustworthy."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from pyro_lvm.evaluation.estimates import Estimate


def gap_warnings(
    L_q: Estimate, L_best: Estimate, fits: dict[str, list], block: int, cc, family: str = "gaussian"
) -> list[str]:
    """What makes the decomposition untrustworthy, one line each: a q* fit (per family in ``fits``) that stopped at
    its step limit (its L[q*] is then not the family's optimum), and L[q*] of the trained guide's family
    (``L_best``) below L[q] beyond noise (q* must be at least as good as any q in its family, the encoder's
    included, so the amortization gap would come out negative)."""
    out = []
    for name, family_fits in fits.items():
        unconverged = sum(not f.converged for f in family_fits)
        if unconverged:
            out.append(
                f"q*_{name} did not converge in {unconverged} of {len(family_fits)} block(s) of up to {block} "
                f"points within compare.qstar_max_steps = {cc.qstar_max_steps}: its L[q*] and the gaps built on it "
                "are not at the family's optimum; raise compare.qstar_max_steps (or compare.qstar_lr)"
            )
    diff = Estimate(L_best.values - L_q.values)
    if diff.mean < -3 * diff.stderr:
        out.append(
            f"L[q*_{family}] is below L[q] by {-diff.mean:.3f} ± {diff.stderr:.3f} nats: q* is not the best in its "
            "family per datapoint, so the amortization gap is meaningless; raise compare.qstar_max_steps or set "
            "compare.qstar_init = 'encoder' (q* then starts at the guide's own q)"
        )
    return out


def share_closed(g: dict) -> str:
    """ "K=1: 40%, K=5: 75%": the refined ELBO's gain over L[q] as a share of the amortization gap; "n/a (why)" where
    that share means nothing: a q* that did not converge, or a gap within its noise (a ratio over ~0 is any number)."""
    gap = g["amortization_gap"]
    if not g.get("qstar_converged", True):
        return "n/a (q* did not converge, so the amortization gap is not measured; raise compare.qstar_max_steps)"
    if gap["mean"] <= 2 * gap["stderr"]:
        return f"n/a (the amortization gap, {gap['mean']:.3f} ± {gap['stderr']:.3f} nats, is within its noise)"
    return ", ".join(f"K={k}: {v:.0%}" for k, v in g["share_closed"].items())


def gap_rows(g: dict) -> list[tuple[str, str]]:
    """(label, key) of the gap table's rows; under AIS the IWAE figure sits beside the AIS one."""
    ais = g.get("log_px_estimator") == "ais"
    out = [
        ("L[q] (amortized)", "L_q"),
        ("L[q*] (local optimum)", "L_qstar"),
        ("log p̂(x) (AIS)" if ais else "log p̂(x)", "log_px"),
    ]
    if ais:
        out.append(("  IWAE log p̂(x), for comparison", "iwae_log_px"))
    return out + [
        ("approximation gap = log p̂(x) - L[q*]", "approximation_gap"),
        ("amortization gap = L[q*] - L[q]", "amortization_gap"),
    ]


def bdmc_line(g: dict) -> str:
    """The BDMC bracket on data simulated from the same decoder, in one line."""
    lo, up, gap = g["bdmc_lower"], g["bdmc_upper"], g["bdmc_gap"]
    return (
        f"BDMC on {gap['n']} points simulated from this decoder (start: {g['bdmc_start']}): log p(x) between "
        f"{lo['mean']:.3f} ± {lo['stderr']:.3f} (AIS) and {up['mean']:.3f} ± {up['stderr']:.3f} (reverse AIS), "
        f"gap {gap['mean']:.3f} ± {gap['stderr']:.3f} nats"
    )


def print_comparison(summary: dict, out: Path) -> None:
    table = [
        [
            r["guide"],
            f"{r['train_elbo']:.2f} ± {r['train_elbo_se']:.2f}",
            f"{r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f}",
            f"{r['test_log_px']:.2f} ± {r['test_log_px_se']:.2f}",
            "n/a" if r.get("active_units") is None else r["active_units"],
            f"{r['train_time_s']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        for r in summary["methods"]
    ]
    print()
    print("nats per datapoint (mean ± standard error over datapoints)")
    print(
        tabulate(
            table,
            headers=[
                "guide",
                "train ELBO",
                "test ELBO",
                "test log p̂(x)",
                "active units",
                "train time (s)",
                "peak RSS (MB)",
            ],  # fmt: skip
        )
    )
    if "gaps" in summary:
        g = summary["gaps"]
        print()
        print(f"gap decomposition on the amortized decoder, {g['L_q']['n']} training points:")
        print(
            tabulate(
                [[name, f"{g[key]['mean']:.3f}", f"{g[key]['stderr']:.3f}"] for name, key in gap_rows(g)],
                headers=["", "mean", "std. error"],
            )
        )
        if "bdmc_gap" in g:
            print(bdmc_line(g))
        if g["share_closed"]:
            print(f"share of the amortization gap closed by K refinement steps: {share_closed(g)}")
        for line in g.get("warnings", []):
            print(f"warning: {line}")
    decoders = {name: summary[key] for name, key in [("Gaussian q", "gaps"), ("flow q", "gaps_flow")] if key in summary}
    if any("L_qstar_flow" in g for g in decoders.values()):
        print_cremer_table(decoders)
    for line in summary.get("gaps_flow", {}).get("warnings", []):
        print(f"warning (flow decoder): {line}")
    print(f"\ntable, JSON, CSV and figures in {out}")


CREMER_ROWS = [
    ("log p̂(x)", "log_px"),
    ("L[q*_flow]", "L_qstar_flow"),
    ("L[q*_Gaussian]", "L_qstar"),
    ("L[q]", "L_q"),
    ("approximation gap = log p̂(x) - L[q*] (own family)", "approximation_gap"),
    ("  Gaussian gap a flow recovers = L[q*_flow] - L[q*_Gaussian]", "flow_recovers"),
    ("  left after the flow = log p̂(x) - L[q*_flow]", "left_after_flow"),
    ("amortization gap = L[q*] (own family) - L[q]", "amortization_gap"),
]


def print_cremer_table(decoders: dict[str, dict]) -> None:
    """Cremer et al. (2018) Table 2: one column per decoder (trained with the Gaussian or the flow encoder), mean ±
    standard error over the same training points; a decoder's own family defines its two gaps."""
    names = list(decoders)
    table = [
        [label] + [f"{g[key]['mean']:.2f} ± {g[key]['stderr']:.2f}" if key in g else "" for g in decoders.values()]
        for label, key in CREMER_ROWS
    ]
    print()
    print("inference gaps (Cremer et al. 2018), nats per datapoint, columns: the decoder was trained with")
    print(tabulate(table, headers=["", *(f"{n}" for n in names)]))
