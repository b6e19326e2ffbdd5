"""RowAdam: each row of a sparse table follows Adam on its own gradient sequence, however rarely it is seen."""

import torch
from torch import nn

from pyro_lvm.infer.optim import adam

LR = 0.01


def _table(rows=50, dim=3, seed=0):
    torch.manual_seed(seed)
    table = nn.Embedding(rows, dim, sparse=True).double()
    return table, adam([table], lr=1e-3, local_lr=LR).sparse


def _step(table, opt, idx, grad_rows):
    """One step in which the rows ``idx`` receive the gradient ``grad_rows`` (R, D)."""
    opt.zero_grad(set_to_none=True)
    (table(idx) * grad_rows).sum().backward()
    opt.step()


def test_constant_gradient_moves_a_rare_row_exactly_lr_per_appearance():
    """Under a constant gradient Adam moves exactly lr (up to eps) per update. Row 0 is in the batch every 21st
    step; torch.optim.SparseAdam moved it 0.70x lr at its 2nd appearance and 2.9-3.6x lr later on."""
    table, opt = _table()
    g = torch.tensor([[0.3, -2.0, 5.0]], dtype=torch.float64)
    moves = []
    for step in range(1, 1100):
        idx = torch.tensor([0, 1 + step % 40]) if step % 21 == 1 else torch.tensor([1 + step % 40, 1 + (step + 7) % 40])
        before = table.weight[0].detach().clone()
        _step(table, opt, idx, g.expand(len(idx), -1))
        if step % 21 == 1:
            moves.append((before - table.weight[0].detach()) / LR)  # per coordinate, in units of lr
    moves = torch.stack(moves)
    expected = torch.sign(g[0]) * g[0].abs() / (g[0].abs() + 1e-8)  # lr·g/(|g| + eps): 1 - 3e-8 at |g| = 0.3
    assert len(moves) == 53
    assert torch.allclose(moves, expected.expand_as(moves), rtol=1e-12, atol=0), (moves - expected).abs().max()


def test_each_row_follows_dense_adam_on_its_own_gradient_sequence():
    """Rows appear at random; each row's trajectory equals torch.optim.Adam run on that row alone with the
    gradients it received (float64, to rounding), and rows never in a batch stay bit-identical."""
    table, opt = _table(rows=30, dim=4, seed=1)
    start = table.weight.detach().clone()
    g = torch.Generator().manual_seed(2)
    received: dict[int, list[torch.Tensor]] = {}
    for _ in range(200):
        idx = torch.randperm(20, generator=g)[:5]  # rows 20..29 are never seen
        grads = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
        for r, gr in zip(idx.tolist(), grads, strict=True):
            received.setdefault(r, []).append(gr)
        _step(table, opt, idx, grads)
    for r, seq in received.items():
        p = nn.Parameter(start[r].clone())
        dense = torch.optim.Adam([p], lr=LR)
        for gr in seq:
            p.grad = gr.clone()
            dense.step()
        assert torch.allclose(table.weight[r].detach(), p.detach(), rtol=1e-13, atol=1e-15), r
        assert int(opt.state[table.weight]["step"][r]) == len(seq)
    assert torch.equal(table.weight[20:].detach(), start[20:])


def test_state_round_trip_is_exact():
    """Stopping after 30 steps, saving the optimiser state and continuing in a new optimiser gives the same
    parameters bit for bit as 60 uninterrupted steps."""

    def run(table, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randperm(50, generator=g)[:8]
            _step(table, opt, idx, torch.randn(8, 3, generator=g, dtype=torch.float64))

    full, opt_full = _table()
    run(full, opt_full, 30, 5)
    run(full, opt_full, 30, 6)
    half, opt_half = _table()
    run(half, opt_half, 30, 5)
    state = {k: v for k, v in opt_half.state_dict().items()}
    resumed, opt_resumed = _table()
    resumed.load_state_dict(half.state_dict())
    opt_resumed.load_state_dict(state)
    assert opt_resumed.state[resumed.weight]["step"].dtype == torch.int64
    run(resumed, opt_resumed, 30, 6)
    assert torch.equal(resumed.weight, full.weight)
