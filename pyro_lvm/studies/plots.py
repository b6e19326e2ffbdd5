"""Figures written into run folders (matplotlib's object API; grids by torchvision).

Figures are ``matplotlib.figure.Figure`` objects saved to files, never pyplot's: the library chooses no backend
and opens no window, so a notebook's or script's own matplotlib setup is left as it was."""

from __future__ import annotations

from pathlib import Path

import torch


def subplots(*grid: int, figsize: tuple[float, float], **kwargs):
    """``plt.subplots`` without pyplot: (figure, axes) of a figure no backend knows about. matplotlib is imported
    here, when a figure is drawn: at module level it cost every CLI command (refusals included) ~0.7 s."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    """Labels, legend and grid of a line plot, then save and close."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def elbo_curves(history: list[dict], path: Path, x_key: str = "step") -> None:
    fig, ax = subplots(figsize=(6, 4))
    xs = [row[x_key] for row in history]
    ax.plot(xs, [row["train_elbo"] for row in history], label="train ELBO (running mean)")
    if any(row.get("beta", 1.0) != 1.0 for row in history):  # KL warm-up: what the optimiser saw differs
        objective = [row.get("train_objective", row["train_elbo"]) for row in history]
        ax.plot(xs, objective, linestyle="--", label="train objective, KL weighted by beta (warm-up)")
    val = [(row[x_key], row["val_elbo"]) for row in history if "val_elbo" in row]
    if val:
        ax.plot(*zip(*val, strict=True), label="validation ELBO")
    _finish(fig, ax, path, x_key, "ELBO per datapoint (nats)")


def image_grid(
    images: torch.Tensor,
    image_shape: tuple[int, ...],
    path: Path,
    nrow: int = 10,
    title: str | None = None,
    pad_value: float = 0.5,
) -> None:
    """``images`` (n, H*W) or (n, C*H*W) in [0, 1], for image_shape (H, W) or (C, H, W) -> one PNG grid."""
    from torchvision.utils import make_grid  # here, as matplotlib: torchvision costs every CLI command ~2 s

    shape = (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)
    grid = make_grid(
        images.detach().float().cpu().reshape(-1, *shape).clamp(0, 1), nrow=nrow, padding=1, pad_value=pad_value
    )  # (C or 3, H', W'): make_grid repeats one channel to three
    fig, ax = subplots(figsize=(nrow * 0.6 + 0.4, grid.shape[1] / grid.shape[2] * nrow * 0.6 + 0.6))
    if shape[0] == 1:
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def latent_scatter(z: torch.Tensor, labels: torch.Tensor, path: Path, split: str = "test") -> None:
    """2-D scatter of guide means of ``split``'s points coloured by label; PCA to 2-D when the latent has more
    dimensions (axes: principal components), else the axes are z_1 and z_2."""
    z = z.detach().float().cpu()
    title = f"guide means E_q[z], {len(z)} {split} points"
    axes = ("z_1", "z_2")
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        z = torch.as_tensor(PCA(n_components=2).fit_transform(z.numpy()))
        title += " (PCA to 2-D)"
        axes = ("principal component 1", "principal component 2")
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], dim=1)
        axes = ("z_1", "(none: 1-D latent)")
    fig, ax = subplots(figsize=(5.5, 5))
    points = ax.scatter(z[:, 0], z[:, 1], c=labels.cpu(), cmap="tab10", s=6)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def bar_with_errors(names: list[str], means: list[float], errors: list[float], ylabel: str, path: Path) -> None:
    fig, ax = subplots(figsize=(1.4 * len(names) + 2, 4))
    ax.bar(names, means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def elbo_vs_time(curves: dict[str, list[dict]], path: Path) -> None:
    fig, ax = subplots(figsize=(6, 4))
    for name, history in curves.items():
        ax.plot([r["time_s"] for r in history], [r["train_elbo"] for r in history], label=f"{name} (train)")
    _finish(fig, ax, path, "wall time (s)", "ELBO per datapoint (nats)")


def gap_histogram(amortization: torch.Tensor, approximation: torch.Tensor, path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(9, 3.5))
    for ax, values, title in [
        (axes[0], amortization, "amortization gap L[q*] - L[q]"),
        (axes[1], approximation, "approximation gap log p̂(x) - L[q*]"),
    ]:
        ax.hist(values.detach().cpu().numpy(), bins=30, color="tab:blue", alpha=0.8)
        ax.axvline(float(values.mean()), color="k", ls="--", label=f"mean {float(values.mean()):.2f}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("nats")
        ax.set_ylabel("datapoints")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def share_closed(shares: dict[int, float], path: Path) -> None:
    fig, ax = subplots(figsize=(5, 3.5))
    ks = sorted(shares)
    ax.plot(ks, [shares[k] for k in ks], "o-")
    ax.set_xticks(ks)  # refinement steps are whole numbers
    ax.axhline(1.0, color="k", ls=":", label="q* (all of the gap)")
    _finish(fig, ax, path, "refinement steps K", "share of amortization gap closed")
