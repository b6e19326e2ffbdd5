"""What ``pyro-lvm evaluate`` reports for the semi-supervised model M2: the label summed out of log p̂(x) and the
ELBO, the classifier's test accuracy and confusion matrix, and the posterior over the label of a few test images
(q(y | x) and the model's p̂(y | x)); figures ``confusion.png`` and ``label_posterior.png``."""

from __future__ import annotations

from pathlib import Path

import torch
from tabulate import tabulate

from pyro_lvm.evaluation.estimates import independent_baseline
from pyro_lvm.evaluation.labels import enumerated_estimates, evaluate_labels
from pyro_lvm.seeding import seeded
from pyro_lvm.studies import plots

SHOWN = 8  # test images whose label posterior is printed and drawn


def evaluate_m2(exp) -> dict:
    """Test-split estimates of M2 (``pyro_lvm.evaluation.labels``) with ``eval.*`` settings, as a JSON-able dict."""
    ev, test = exp.cfg.eval, exp.data.test
    res = evaluate_labels(
        exp.model, exp.guide, test, ev.num_samples, ev.chunk_size, ev.batch_size, ev.num_points, ev.seed
    )
    n = res["log_px"].values.numel()
    with seeded(ev.seed):
        shown = enumerated_estimates(exp.model, exp.guide, test.x[:SHOWN], ev.num_samples, ev.chunk_size)
    train = exp.data.train
    labelled = exp.data.labelled
    return {
        "split": "test",
        "num_points": n,
        "num_samples": ev.num_samples,
        "elbo": res["elbo"].as_dict(),
        "log_px": res["log_px"].as_dict(),
        "baseline_log_px": independent_baseline(train.x, test.x[:n], exp.data.binary).as_dict(),
        "accuracy": res["accuracy"],
        "model_accuracy": res["model_accuracy"],
        "confusion": res["confusion"].tolist(),
        "num_labelled": len(train) if labelled is None else int(labelled.sum()),
        "num_train": len(train),
        "label_posterior": {
            "true": test.y[:SHOWN].tolist(),
            "q_y": shown["q_y"].tolist(),
            "model_p_y": torch.softmax(shown["log_joint"], -1).tolist(),
        },
        "active_units": None,
        "latent_dim": exp.model.latent_dim,
    }


def m2_figures(exp, result: dict, run_dir: Path) -> list[Path]:
    """The confusion matrix and the first test images beside their label posteriors."""
    K = len(result["confusion"])
    fig, ax = plots.subplots(figsize=(5, 4.4))
    image = ax.imshow(result["confusion"], cmap="Blues")
    ax.set_xticks(range(K))
    ax.set_yticks(range(K))
    ax.set_xlabel("predicted by q(y|x)")
    ax.set_ylabel("true class")
    ax.set_title(f"test accuracy {100 * result['accuracy']:.1f}% ({result['num_labelled']} labels)", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(run_dir / "confusion.png", dpi=120)
    post = result["label_posterior"]
    fig, axes = plots.subplots(2, SHOWN, figsize=(1.5 * SHOWN, 3.2), squeeze=False)
    shape = exp.data.image_shape
    for i, true in enumerate(post["true"]):
        if shape is not None:
            image = exp.data.test.x[i].float().cpu().reshape(shape)  # (H, W) or (C, H, W)
            image = image if image.dim() == 2 else image.permute(1, 2, 0).squeeze(-1)
            axes[0, i].imshow(image.clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        axes[0, i].axis("off")
        axes[0, i].set_title(f"class {true}", fontsize=8)
        axes[1, i].bar(range(K), post["q_y"][i], color="tab:blue", label="q(y|x)")
        axes[1, i].plot(range(K), post["model_p_y"][i], "k.", label="p̂(y|x)")
        axes[1, i].set_ylim(0, 1)
        axes[1, i].set_xticks(range(0, K, max(1, K // 5)))
    axes[1, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(run_dir / "label_posterior.png", dpi=120)
    return [run_dir / "confusion.png", run_dir / "label_posterior.png"]


def print_m2(result: dict) -> None:
    num = result["num_samples"]
    rows = [
        [f"ELBO, y summed out (K={num} average)", result["elbo"]["mean"], result["elbo"]["stderr"]],
        [f"IWAE log p̂(x), y summed out, K={num}", result["log_px"]["mean"], result["log_px"]["stderr"]],
        ["independent-pixel baseline log p(x)", result["baseline_log_px"]["mean"], result["baseline_log_px"]["stderr"]],
    ]
    print(f"test split, {result['num_points']} points, nats per datapoint:")
    print(tabulate(rows, headers=["estimate", "mean", "std. error"], floatfmt=".3f"))
    print(
        f"label accuracy on the test split: q(y|x) {100 * result['accuracy']:.1f}%, model p̂(y|x) "
        f"{100 * result['model_accuracy']:.1f}% (trained with {result['num_labelled']} of {result['num_train']} labels)"
    )
    post = result["label_posterior"]
    for true, q in zip(post["true"], post["q_y"], strict=True):
        top = sorted(range(len(q)), key=lambda k: -q[k])[:3]
        print(f"  test image of class {true}: q(y|x) " + ", ".join(f"{k}: {q[k]:.2f}" for k in top))
