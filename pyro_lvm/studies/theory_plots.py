"""Figures of the theory experiments: the ELBO identity, forward vs reverse KL, guide vs NUTS posteriors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyro_lvm.studies.plots import subplots


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def elbo_identity(terms: list, path: Path, num_points: int = 15) -> None:
    """One panel per guide; per datapoint the ELBO (blue), the KL(q‖p(z|x)) as an orange bar stacked on top of
    it, and the exact log p(x) (black), which the top of the bar reaches: log p(x) = ELBO + KL."""
    fig, axes = subplots(1, len(terms), figsize=(3.6 * len(terms), 3.6), squeeze=False)
    for ax, t in zip(axes[0], terms, strict=True):
        n = min(num_points, len(t.log_px))
        xs = np.arange(n)
        shown = t.elbo_mc if bool(t.elbo.isnan().all()) else t.elbo  # a flow has the sampled ELBO only
        elbo, kl, lp = (v[:n].detach().cpu().numpy() for v in (shown, t.kl, t.log_px))
        ax.bar(xs, kl, bottom=elbo, width=0.5, color="tab:orange", label="KL(q ‖ p(z|x))")
        ax.plot(xs, elbo, "_", color="tab:blue", markersize=12, mew=2, label="ELBO")
        ax.plot(xs, lp, "k.", label="log p(x) (exact)")
        ax.set_title(f"{t.guide}\nmean KL {float(t.kl.mean()):.3f} nats", fontsize=9)
        ax.set_xlabel("datapoint")
        ax.margins(y=0.1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("nats")
    axes[0][0].legend(fontsize=7, loc="lower left")
    _save(fig, path)


def _ellipse(ax, loc: torch.Tensor, cov: torch.Tensor, color: str, label: str) -> None:
    """The 2-standard-deviation ellipse of N(loc, cov)."""
    angle = torch.linspace(0, 2 * torch.pi, 200, dtype=cov.dtype)
    circle = torch.stack([angle.cos(), angle.sin()], -1) * 2.0
    points = loc + circle @ torch.linalg.cholesky(cov).T
    ax.plot(points[:, 0], points[:, 1], color=color, label=label)
    ax.plot(*loc.tolist(), "x", color=color)


def kl_fits(target_1d, fits_1d: dict, target_2d, fits_2d: dict, path: Path) -> None:
    """Left: the 1-D bimodal density with each Gaussian fit. Right: 2-D target contours with 2-sd ellipses."""
    colors = {"reverse KL(q‖p) (VI)": "tab:red", "forward KL(p‖q)": "tab:green"}
    fig, (left, right) = subplots(1, 2, figsize=(10, 4))
    grid = torch.linspace(-5, 5, 600, dtype=torch.float64)
    left.fill_between(grid, target_1d.log_prob(grid[:, None]).exp(), color="0.8", label="target p")
    for name, q in fits_1d.items():
        left.plot(grid, q.log_prob(grid[:, None]).exp(), color=colors[name], label=name)
    left.set_xlabel("z")
    left.set_ylabel("density")
    left.legend(fontsize=8)
    g = torch.linspace(-5, 5, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    density = target_2d.log_prob(torch.stack([gx, gy], -1)).exp()
    right.contourf(gx, gy, density, levels=12, cmap="Greys")
    for name, q in fits_2d.items():
        _ellipse(right, q.loc, q.covariance_matrix, colors[name], name)
    right.set_aspect("equal")
    right.set_xlabel("z₁")
    right.set_ylabel("z₂")
    right.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def guide_vs_nuts(nuts: np.ndarray, guide: np.ndarray, path: Path) -> None:
    """One panel per datapoint: NUTS draws and guide draws of the first two latent dimensions.
    ``nuts`` (S, B, D), ``guide`` (S', B, D)."""
    num = nuts.shape[1]
    fig, axes = subplots(1, num, figsize=(3.2 * num, 3.2), squeeze=False)
    for b, ax in enumerate(axes[0]):
        ax.scatter(nuts[:, b, 0], nuts[:, b, 1], s=3, alpha=0.3, color="k", label="NUTS p(z|x)")
        ax.scatter(guide[:, b, 0], guide[:, b, 1], s=3, alpha=0.3, color="tab:orange", label="guide q(z|x)")
        ax.set_title(f"datapoint {b}", fontsize=9)
        ax.set_xlabel("z₁")
    axes[0][0].set_ylabel("z₂")
    axes[0][0].legend(fontsize=7, markerscale=3)
    _save(fig, path)
