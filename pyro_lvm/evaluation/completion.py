"""Quadrant completion grids: what a quadrant CVAE draws for the hidden part of test images."""

from __future__ import annotations

import torch

from pyro_lvm.data.datasets import Split


@torch.no_grad()
def completion_images(model, condition, split: Split, rows: int, completions: int) -> torch.Tensor:
    """Full images (rows * (3 + completions), P), row by row: the observed part (hidden pixels grey), the truth,
    the NN baseline's prediction, then ``completions`` CVAE completions, each the decoder mean E[x | z, c] of one
    z ~ p(z | c) drawn through ``pyro.infer.Predictive`` (model.generate)."""
    x, y = split.x[:rows], split.y[:rows]
    target, c = condition(x, y)  # (R, P_hidden), (R, C)
    observed = condition.assemble(torch.full_like(target, 0.5), c)
    columns = [observed, x, condition.assemble(model.baseline.predict(c), c)]
    c_rep = c.repeat_interleave(completions, dim=0)  # (R * S, C)
    drawn = condition.assemble(model.generate(c_rep, len(c_rep)), c_rep)  # (R * S, P)
    grid = torch.cat([col[:, None] for col in columns] + [drawn.reshape(len(x), completions, -1)], dim=1)
    return grid.reshape(-1, x.shape[-1])  # (R * (3 + S), P)
