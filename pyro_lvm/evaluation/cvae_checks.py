"""Checks of a conditional VAE.

- ``prior_log_px``: the prior Monte-Carlo estimate log p̂(x|c) = log 1/K Σ_k p(x | z_k, c), z_k ~ p(z|c), i.e.
  importance sampling with the prior as proposal. It is a consistent estimate like the IWAE one with q(z|x,c),
  but far noisier; reported beside it for comparison, never instead of it. (The Pyro CVAE tutorial's "CVAE"
  column is a negative ELBO: an upper bound on −log p(x|c), not an estimate of it.)
- ``class_prior_kl``: KL(p(z|c=i) ‖ p(z|c=j)) for every pair of classes, closed-form where torch has it
  (Gaussian priors), Monte Carlo otherwise. Zero for a prior that ignores c.
- ``generation_accuracy``: a scikit-learn logistic regression trained on the real training images labels the
  decoder means of z ~ p(z | c = k); the share labelled k, per class.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import kl_divergence

from pyro_lvm.evaluation.estimates import Estimate, estimates_from_q, evaluate_split, prior_proposal
from pyro_lvm.seeding import seeded


@torch.no_grad()
def prior_log_px(model, x, c, num_samples: int, chunk_size: int) -> torch.Tensor:
    """(B,) prior Monte-Carlo estimates of log p(x | c)."""
    return estimates_from_q(model, prior_proposal(model, x, c), x, c, num_samples, chunk_size)[0]


@torch.no_grad()
def class_prior_kl(model, condition, dtype, device, num_samples: int = 4000) -> torch.Tensor:
    """(C, C) matrix of KL(p(z|c=i) ‖ p(z|c=j))."""
    k = condition.num_classes
    y = torch.arange(k, device=device)
    rows = condition.labels(y.repeat_interleave(k), dtype)  # class i at i*k + j
    cols = condition.labels(y.repeat(k), dtype)  # class j at i*k + j
    p_rows, p_cols = (model.prior_dist(c).expand([k * k]) for c in (rows, cols))
    try:
        kl = kl_divergence(p_rows, p_cols)
    except NotImplementedError:
        z = p_rows.sample((num_samples,))  # (S, k*k, D)
        kl = (p_rows.log_prob(z) - p_cols.log_prob(z)).mean(0)
    return kl.reshape(k, k)


def mean_pairwise_kl(kl: torch.Tensor) -> float:
    off_diagonal = ~torch.eye(kl.shape[0], dtype=torch.bool, device=kl.device)
    return float(kl[off_diagonal].mean())


def train_classifier(x: torch.Tensor, y: torch.Tensor):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=3000).fit(x.detach().cpu().numpy(), y.cpu().numpy())


@torch.no_grad()
def generation_accuracy(model, condition, classifier, num_per_class: int, dtype, device) -> np.ndarray:
    """Per class k, the share of decoder means of z ~ p(z|c=k) that ``classifier`` labels k."""
    accuracy = []
    for k in range(condition.num_classes):
        c = condition.labels(torch.full((num_per_class,), k, dtype=torch.long, device=device), dtype)
        images = model.generate(c, num_per_class)  # (n, P), through pyro.infer.Predictive
        accuracy.append(float((classifier.predict(images.cpu().numpy()) == k).mean()))
    return np.array(accuracy)


def label_cvae_report(exp, num_per_class: int = 100, seed: int = 0) -> dict:
    """Generation accuracy per class (with the classifier's own test accuracy as a reference) and the class
    priors' pairwise KL, for a label-conditioned run."""
    dtype, device = exp.data.train.x.dtype, exp.device
    classifier = train_classifier(exp.data.train.x, exp.data.train.y)
    test_accuracy = float((classifier.predict(exp.data.test.x.cpu().numpy()) == exp.data.test.y.cpu().numpy()).mean())
    with seeded(seed):
        acc = generation_accuracy(exp.model, exp.condition, classifier, num_per_class, dtype, device)
        kl = class_prior_kl(exp.model, exp.condition, dtype, device)
    return {
        "classifier_test_accuracy": test_accuracy,
        "generation_accuracy": acc.tolist(),
        "min_generation_accuracy": float(acc.min()),
        "mean_pairwise_prior_kl": mean_pairwise_kl(kl),
    }


def prior_estimate(model, split, condition, num_samples, chunk_size, batch_size, num_points, seed) -> Estimate:
    """The prior Monte-Carlo log p̂(x|c) on the first ``num_points`` rows of ``split``."""
    return evaluate_split(
        model,
        None,
        split,
        condition,
        num_samples,
        chunk_size,
        batch_size,
        num_points,
        seed=seed,
        proposal=prior_proposal,
    )["log_px"]
