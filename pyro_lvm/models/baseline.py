"""The deterministic NN baseline of quadrant completion (Sohn et al. 2015; the Pyro CVAE tutorial).

A network f maps the observed quadrants c to the hidden pixels' likelihood parameters, and the hidden pixels are
independent given c:  p(x | c) = Π_p p(x_p | f(c)_p)  (Bernoulli for binary images). Its log-likelihood is exact,
so it is the honest yardstick for the CVAE's importance-sampled log p̂(x | c): it predicts one "average"
completion and cannot represent several plausible ones, which is what the CVAE's latent z is for.

It is fitted by maximum likelihood (Adam, its own seeded batches, early-stopped on the validation split) before
the CVAE trains, then frozen: its
parameters do not require gradients, so the CVAE's optimiser never sees them. With ``baseline.feed_prior`` the
prior network sees its prediction as well, p(z | c, E[x | f(c)]) (the tutorial's design).
"""

from __future__ import annotations

import copy
import math
from collections import deque

import torch
from torch import nn

from pyro_lvm.data import Batches
from pyro_lvm.data.batches import in_order, note_batch_clamp
from pyro_lvm.data.datasets import Split
from pyro_lvm.nn.nets import mlp
from pyro_lvm.progress import bar as progress_bar
from pyro_lvm.seeding import seeded


class CompletionBaseline(nn.Module):
    """f: c (B, C) -> likelihood parameters of the hidden pixels (B, P); ``likelihood`` is its own module, so a
    learned Gaussian scale is the baseline's, not the CVAE's."""

    def __init__(self, cond_dim: int, hidden: list[int], target_dim: int, likelihood: nn.Module) -> None:
        super().__init__()
        self.net = mlp([cond_dim, *hidden, target_dim])
        self.likelihood = likelihood
        self.requires_grad_(False)  # frozen except while fitted

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B,) exact log p(x | c) of the hidden pixels x (B, P)."""
        return self.likelihood(self.net(c)).log_prob(x)

    @torch.no_grad()
    def predict(self, c: torch.Tensor) -> torch.Tensor:
        """E[x | f(c)] (B, P): pixel probabilities for Bernoulli, means for Gaussian. Never carries gradients."""
        return self.likelihood(self.net(c)).mean


@torch.no_grad()
def split_log_prob(baseline: CompletionBaseline, split: Split, condition, batch_size: int = 1000) -> torch.Tensor:
    """(N,) exact log p(x | c) for every row of a split."""
    return torch.cat([baseline.log_prob(*condition(b.x, b.y)) for b in in_order(split, batch_size)])


def fit_baseline(
    baseline: CompletionBaseline,
    train: Split,
    val: Split | None,
    condition,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    dynamic_binarize: bool = False,
    progress: bool = True,
) -> dict:
    """Maximise the mean log p(x | c) over ``train`` by Adam for ``steps`` steps. With a validation split, its
    mean log p(x | c) is measured every epoch and the best epoch's weights are kept (early stopping): the
    yardstick is as strong as the budget allows. Draws from its own seeded RNG stream, so the CVAE's training
    stream is untouched. Returns the train (last epoch's running mean) and validation figures and the step kept."""
    note_batch_clamp(batch_size, len(train), "baseline.batch_size")
    batches = Batches(train, batch_size, seed, dynamic_binarize)
    baseline.requires_grad_(True)
    opt = torch.optim.Adam(baseline.parameters(), lr=lr)
    window: deque[float] = deque(maxlen=batches.steps_per_epoch)
    best = {"step": steps, "val_log_px": -math.inf}
    best_state = None
    bar = progress_bar(steps, 0, "NN baseline", "step", enabled=progress)
    try:
        with seeded(seed):
            for step in range(steps):
                bar.update(1)
                batch = batches.batch(step)
                target, c = condition(batch.x, batch.y)
                loss = -baseline.log_prob(target, c).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                window.append(-loss.item())
                done = step + 1
                if val is not None and len(val) and (done % batches.steps_per_epoch == 0 or done == steps):
                    score = float(split_log_prob(baseline, val, condition).mean())
                    if score > best["val_log_px"]:
                        best = {"step": done, "val_log_px": score}
                        best_state = copy.deepcopy(baseline.state_dict())
    finally:
        bar.close()
        baseline.requires_grad_(False)
    if best_state is not None:
        baseline.load_state_dict(best_state)
    return {"baseline_train_log_px": sum(window) / len(window), **{f"baseline_{k}": v for k, v in best.items()}}
