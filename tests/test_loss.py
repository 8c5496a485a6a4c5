"""InfoNCE: hand-computed values, the gather by monkeypatch, and a real 2-process gloo run."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from s4g.model.loss import INIT_LOGIT_SCALE, InfoNCE, gather_features


def _smoothed_ce(row: np.ndarray, target: int, eps: float) -> float:
    # Cross-entropy with label smoothing written out: target weight 1-eps+eps/n, others eps/n.
    logp = row - math.log(np.exp(row).sum())
    n = len(row)
    weights = np.full(n, eps / n)
    weights[target] += 1 - eps
    return float(-(weights * logp).sum())


def test_hand_computed_two_pairs():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    r = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    fn = InfoNCE(label_smoothing=0.1)
    s = 1 / 0.07
    # q·rᵀ = [[0.8, 0.0], [0.96, 0.8]]
    sim = np.array([[0.8, 0.0], [0.96, 0.8]]) * s
    expected_q = np.mean([_smoothed_ce(sim[i], i, 0.1) for i in range(2)])
    expected_r = np.mean([_smoothed_ce(sim.T[i], i, 0.1) for i in range(2)])
    got = fn(q, r).item()
    assert got == pytest.approx(0.5 * (expected_q + expected_r), rel=1e-5)
    # By hand for row 0 of q: logits (11.4286, 0); p = 1/(1+e^-11.4286)
    row0 = -(0.95 * math.log(1 / (1 + math.exp(-0.8 * s))) + 0.05 * math.log(1 / (1 + math.exp(0.8 * s))))
    assert _smoothed_ce(sim[0], 0, 0.1) == pytest.approx(row0, rel=1e-9)


def test_perfect_alignment_low_loss_and_uncapped_scale():
    fn = InfoNCE(label_smoothing=0.0)
    with torch.no_grad():
        fn.logit_scale.fill_(10.0)  # exp(10) > 100: uncapped, as the reference trains it
    assert fn.scale.item() == pytest.approx(math.exp(10.0))
    assert fn(torch.eye(8, 16), torch.eye(8, 16)).item() < 1e-6
    assert InfoNCE().logit_scale.item() == pytest.approx(INIT_LOGIT_SCALE)


def test_gather_by_monkeypatch(monkeypatch):
    torch.manual_seed(0)
    world, rank, b = 3, 1, 4
    full_q = F.normalize(torch.randn(world * b, 8), dim=-1)
    full_r = F.normalize(torch.randn(world * b, 8), dim=-1)
    import s4g.model.loss

    def fake_all_gather(t):
        full = full_q if t.data_ptr() == local_q.data_ptr() else full_r
        return full.clone()

    local_q = full_q[rank * b:(rank + 1) * b].clone().requires_grad_()
    local_r = full_r[rank * b:(rank + 1) * b].clone().requires_grad_()
    monkeypatch.setattr(s4g.model.loss, "_all_gather", fake_all_gather)
    all_q, all_r = gather_features(local_q, local_r, rank, world)
    assert torch.equal(all_q, full_q) and torch.equal(all_r, full_r)
    # The local rows are the very tensors passed in, so they keep their gradient.
    all_q.sum().backward()
    assert local_q.grad is not None and torch.equal(local_q.grad, torch.ones_like(local_q))

    # Rank 1's loss = the single-process loss restricted to rows [b, 2b) of both directions.
    fn = InfoNCE(label_smoothing=0.1, rank=rank, world_size=world)
    got = fn(local_q.detach(), local_r.detach())
    s = fn.scale.detach()
    labels = torch.arange(rank * b, (rank + 1) * b)
    rows = slice(rank * b, (rank + 1) * b)
    ce_q = F.cross_entropy(s * full_q[rows] @ full_r.T, labels, label_smoothing=0.1)
    ce_r = F.cross_entropy(s * full_r[rows] @ full_q.T, labels, label_smoothing=0.1)
    assert got.item() == pytest.approx(0.5 * (ce_q + ce_r).item(), rel=1e-6)


class _Tiny(nn.Module):
    # A linear "encoder" plus the loss, so DDP averages the temperature's gradient too.
    def __init__(self, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(6, 5)
        self.loss = InfoNCE(label_smoothing=0.1, rank=rank, world_size=world_size)

    def forward(self, g, a):
        return self.loss(F.normalize(self.enc(g), dim=-1), F.normalize(self.enc(a), dim=-1))


def _inputs(n: int = 8):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=gen), torch.randn(n, 6, generator=gen)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_Tiny(rank, world))
        g, a = _inputs()
        b = g.shape[0] // world
        local = model(g[rank * b:(rank + 1) * b], a[rank * b:(rank + 1) * b])
        local.backward()
        mean_loss = local.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        grads = {k: p.grad for k, p in model.module.named_parameters()}
        torch.save({"loss": mean_loss, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    single = _Tiny()
    g, a = _inputs()
    full = single(g, a)
    full.backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"].item() == pytest.approx(full.item(), rel=1e-5)
        for name, p in single.named_parameters():
            torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-5, atol=1e-6)
