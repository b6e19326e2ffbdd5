"""Estimates for the semi-supervised model M2, with the label y summed out exactly over its K classes.

For each class k, IWAE and the ELBO under q(z | x, y = k) estimate log p(x, y = k) (the model scores y = k with
log p(y) included); then, per datapoint,

    log p̂(x)  = logsumexp_k log p̂(x, y = k)                         (each p̂(x, k) is unbiased, so is their sum)
    ELBO(x)   = Σ_k q(k | x) [ ELBO(x, k) − log q(k | x) ]           (the unlabelled bound U(x) of training)
    p̂(y | x)  = softmax_k log p̂(x, y = k)                            (the model's posterior over the label)

and the classifier q(y | x) gives accuracy and the confusion matrix.
"""

from __future__ import annotations

import torch

from pyro_lvm.data.batches import in_order
from pyro_lvm.data.datasets import Split
from pyro_lvm.evaluation.estimates import Estimate, estimates_from_q, guide_distribution
from pyro_lvm.seeding import seeded


def label_probs(guide, x: torch.Tensor) -> torch.Tensor:
    """q(y | x), (B, K)."""
    return torch.softmax(guide.classify(x), dim=-1)


@torch.no_grad()
def enumerated_estimates(
    model, guide, x: torch.Tensor, num_samples: int = 1000, chunk_size: int = 1000
) -> dict[str, torch.Tensor]:
    """Per datapoint: ``log_px`` (B,), ``elbo`` (B,), ``log_joint`` (B, K) = log p̂(x, y = k), and ``q_y`` (B, K)."""
    K = guide.num_classes
    log_q_y = torch.log_softmax(guide.classify(x), dim=-1)  # (B, K)
    log_joint, elbos = [], []
    for k in range(K):
        c = torch.zeros(x.shape[0], K, dtype=x.dtype, device=x.device)
        c[:, k] = 1.0  # (B, K), every row labelled k
        q = guide_distribution(guide, x, c)
        lp, el = estimates_from_q(model, q, x, c, num_samples, chunk_size)
        log_joint.append(lp)
        elbos.append(el)
    log_joint_t, elbo_t = torch.stack(log_joint, -1), torch.stack(elbos, -1)  # (B, K) each
    q_y = log_q_y.exp()
    return {
        "log_px": torch.logsumexp(log_joint_t, -1),
        "elbo": (q_y * (elbo_t - log_q_y)).sum(-1),
        "log_joint": log_joint_t,
        "q_y": q_y,
    }


def confusion_matrix(y: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    counts = torch.zeros(num_classes * num_classes, dtype=torch.long)
    counts.index_add_(0, (y.cpu() * num_classes + predicted.cpu()), torch.ones(len(y), dtype=torch.long))
    return counts.reshape(num_classes, num_classes)


@torch.no_grad()
def evaluate_labels(
    model,
    guide,
    split: Split,
    num_samples: int,
    chunk_size: int,
    batch_size: int,
    num_points: int | None = None,
    seed: int = 1,
) -> dict:
    """M2 on ``split`` (labels hidden from the model, used only to score): ``log_px`` and ``elbo`` Estimates with y
    summed out; ``accuracy`` and ``confusion`` of q(y | x) on every row, and ``model_accuracy`` of the argmax of
    p̂(y | x) on the importance-sampled rows. Draws from its own seeded stream."""
    out: dict[str, list] = {"log_px": [], "elbo": [], "log_joint": []}
    with seeded(seed):
        for batch in in_order(split.head(num_points), batch_size):
            est = enumerated_estimates(model, guide, batch.x, num_samples, chunk_size)
            for key in out:
                out[key].append(est[key])
    predicted = torch.cat([label_probs(guide, b.x).argmax(-1) for b in in_order(split, batch_size)])
    log_joint = torch.cat(out["log_joint"])
    n = len(log_joint)
    return {
        "log_px": Estimate(torch.cat(out["log_px"])),
        "elbo": Estimate(torch.cat(out["elbo"])),
        "accuracy": float((predicted == split.y).float().mean()),
        "model_accuracy": float((log_joint.argmax(-1) == split.y[:n]).float().mean()),
        "confusion": confusion_matrix(split.y, predicted, guide.num_classes),
    }


def label_validation_elbo(exp, batch_size: int = 500, seed: int = 1) -> float:
    """The training loop's validation curve for M2: the unlabelled bound U(x) per datapoint (one z per class)."""
    return evaluate_labels(exp.model, exp.guide, exp.data.val, 1, 1, batch_size, seed=seed)["elbo"].mean
