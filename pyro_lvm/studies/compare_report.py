"""What ``pyro-lvm compare`` prints: the method table, the gap decomposition and what makes it untrustworthy."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from pyro_lvm.evaluation.estimates import Estimate


def gap_warnings(L_q: Estimate, L_qstar: Estimate, unconverged: int, blocks: int, block: int, cc) -> list[str]:
    """What makes the decomposition untrustworthy, one line each: a q* fit that stopped at its step limit (L[q*]
    is then not the family's optimum), and L[q*] below L[q] beyond noise (q* must be at least as good as any q in
    its family, the encoder's included, so the amortization gap would come out negative)."""
    out = []
    if unconverged:
        out.append(
            f"q* did not converge in {unconverged} of {blocks} block(s) of up to {block} points within "
            f"compare.qstar_max_steps = {cc.qstar_max_steps}: L[q*] and both gaps are not at the Gaussian optimum; "
            "raise compare.qstar_max_steps (or compare.qstar_lr)"
        )
    diff = Estimate(L_qstar.values - L_q.values)
    if diff.mean < -3 * diff.stderr:
        out.append(
            f"L[q*] is below L[q] by {-diff.mean:.3f} ± {diff.stderr:.3f} nats: q* is not the best Gaussian per "
            "datapoint, so the amortization gap is meaningless; raise compare.qstar_max_steps or set "
            "compare.qstar_init = 'encoder'"
        )
    return out


def print_comparison(summary: dict, out: Path) -> None:
    table = [
        [
            r["guide"],
            f"{r['train_elbo']:.2f} ± {r['train_elbo_se']:.2f}",
            f"{r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f}",
            f"{r['test_log_px']:.2f} ± {r['test_log_px_se']:.2f}",
            f"{r['train_time_s']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        for r in summary["methods"]
    ]
    print()
    print("nats per datapoint (mean ± standard error over datapoints)")
    print(
        tabulate(
            table, headers=["guide", "train ELBO", "test ELBO", "test log p̂(x)", "train time (s)", "peak RSS (MB)"]
        )
    )
    if "gaps" in summary:
        g = summary["gaps"]
        print()
        print(f"gap decomposition on the amortized decoder, {g['L_q']['n']} training points:")
        print(
            tabulate(
                [
                    [name, f"{g[key]['mean']:.3f}", f"{g[key]['stderr']:.3f}"]
                    for name, key in [
                        ("L[q] (amortized)", "L_q"),
                        ("L[q*] (local optimum)", "L_qstar"),
                        ("log p̂(x)", "log_px"),
                        ("approximation gap = log p̂(x) - L[q*]", "approximation_gap"),
                        ("amortization gap = L[q*] - L[q]", "amortization_gap"),
                    ]
                ],
                headers=["", "mean", "std. error"],
            )
        )
        print(
            "share of the amortization gap closed by K refinement steps: "
            + ", ".join(f"K={k}: {v:.0%}" for k, v in g["share_closed"].items())
        )
        for line in g.get("warnings", []):
            print(f"warning: {line}")
    print(f"\ntable, JSON, CSV and figures in {out}")
