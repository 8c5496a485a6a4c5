"""How many pairs each process embeds at once: `--chunk-size N`, or `auto`, a short probe of
what fits in the GPU's memory next to the model, its optimizer state and the batch's images."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from s4g.config import TrainConfig
from s4g.distributed import DistEnv
from s4g.errors import UserInputError
from s4g.flags import Flag
from s4g.model.gradcache import rng_devices

# The probed chunk is scaled by this before use: activations grow about linearly with the
# chunk, so about a tenth of its activation memory stays free for the caching allocator's
# fragmentation over a long run (a chunk that only just fitted the probe could fail hours later).
MARGIN = 0.9


@dataclass(frozen=True)
class ChunkPlan:
    """size: pairs per chunk in each process, None = the process's whole share of the batch
    at once (the plain step); note: what was chosen and why, one line for the user."""

    size: int | None
    note: str


def plan_chunks(cfg: TrainConfig, env: DistEnv, model: nn.Module, optimizer: torch.optim.Optimizer,
                autocast: Callable[[], contextlib.AbstractContextManager], *,
                ground_hw: tuple[int, int] | None = None) -> ChunkPlan:
    """The chunking of cfg.chunk_size (0, N or "auto") for a model already on env.device,
    trained on ground images of ground_hw (H, W) pixels (default cfg.ground_size).

    N >= the per-process share means the plain step. "auto" on the CPU: the plain step; on a
    GPU: MARGIN times the largest chunk that fits (probe_largest_chunk; the smallest over all
    processes), evened out over the chunks it takes; the plain step when that covers the share.
    """
    share = cfg.batch_size // env.world_size
    if cfg.chunk_size != "auto":
        size = int(cfg.chunk_size)
        if 0 < size < share:
            return ChunkPlan(size, f"{Flag.CHUNK_SIZE} {size}: {_how(share, size)}")
        return ChunkPlan(None, f"{Flag.CHUNK_SIZE} {size}: the whole batch of {share} pairs per process at once")
    if env.device.type != "cuda":
        return ChunkPlan(None, f"{Flag.CHUNK_SIZE} auto: the whole batch at once (no memory probe on the CPU)")
    ground_hw = ground_hw or cfg.ground_size
    t0 = time.perf_counter()
    largest = probe_largest_chunk(model, optimizer, autocast, upto=math.ceil(share / MARGIN),
                                  ground_hw=ground_hw, aerial_hw=(cfg.aerial_size, cfg.aerial_size),
                                  device=env.device)
    if env.distributed:  # every process must take the same path through the step
        agreed = torch.tensor([largest], device=env.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        largest = int(agreed.item())
    probe = f"probe {time.perf_counter() - t0:.1f} s"
    if largest == 0:
        raise UserInputError(
            f"{Flag.CHUNK_SIZE} auto: not even one pair ({cfg.aerial_size}px aerial, {ground_hw[0]}x"
            f"{ground_hw[1]} ground, {Flag.BACKBONE} {cfg.backbone}) fits in GPU memory next to the model "
            f"and its optimizer state; lower the image sizes or use a smaller backbone"
        )
    usable = max(1, math.floor(MARGIN * largest))
    if usable >= share:
        return ChunkPlan(None, f"{Flag.CHUNK_SIZE} auto: the whole batch of {share} pairs per process fits "
                                      f"in GPU memory, no chunking ({probe})")
    size = balanced_chunk(share, usable)
    return ChunkPlan(size, f"{Flag.CHUNK_SIZE} auto: {size} pairs, {_how(share, size)} "
                                  f"({largest} fitted the probe; {probe})")


def _how(share: int, size: int) -> str:
    return (f"{math.ceil(share / size)} chunks of up to {size} pairs per step of {share} pairs per process "
            "(one extra forward pass; same gradients as the whole batch)")


def balanced_chunk(share: int, largest: int) -> int:
    """The smallest chunk that splits `share` pairs into as few chunks as chunks of `largest`
    would: same number of passes, less memory (128 at most 50 -> 3 chunks of <= 43)."""
    return math.ceil(share / math.ceil(share / largest))


def largest_fitting(fits: Callable[[int], bool], upto: int) -> int:
    """The largest n in [1, upto] with fits(n), for a fits that holds for every n below one
    that fits; 0 when fits(1) is false. Tries `upto` first, then bisects (log2(upto) tries)."""
    if fits(upto):
        return upto
    lo, hi = 0, upto  # fits(lo) holds (vacuously at 0), fits(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def probe_largest_chunk(model: nn.Module, optimizer: torch.optim.Optimizer,
                        autocast: Callable[[], contextlib.AbstractContextManager], *, upto: int,
                        ground_hw: tuple[int, int], aerial_hw: tuple[int, int], device: torch.device) -> int:
    """The largest number of pairs (<= upto) whose forward and backward under `autocast` fit
    on `device` (a GPU: the CPU raises no out-of-memory error), 0 if not even one does;
    ground_hw, aerial_hw: image (H, W), pixels.

    Each trial holds what a training step holds besides the chunk's activations: the
    parameters, their gradients, `upto` pairs of images (float32, channels-last; a step holds
    its whole share), and room for the optimizer state that the first step will allocate.
    Weights, gradients and RNG states are left as they were.
    """
    reserve = _unallocated_optimizer_bytes(optimizer)
    params = list(model.parameters())
    stashed = [p.grad for p in params]  # the trials accumulate into fresh gradients
    with torch.random.fork_rng(devices=rng_devices(device)):  # random images, stochastic depth
        # (ground, aerial) in a list that the end empties: the closure below holds the list, not the images
        images = [torch.randn(upto, 3, *hw, device=device).contiguous(memory_format=torch.channels_last)
                  for hw in (ground_hw, aerial_hw)]

        def fits(n: int) -> bool:
            try:
                _trial(model, autocast, images[0][:n], images[1][:n], reserve)
                ok = True
            except torch.OutOfMemoryError:
                ok = False
            # Out of the handler, the traceback and the trial's tensors it held are gone.
            for p in params:
                p.grad = None
            torch.cuda.empty_cache()
            return ok

        try:
            return largest_fitting(fits, upto)
        finally:
            for p, g in zip(params, stashed):
                p.grad = g
            images.clear()  # free the images before emptying the cache
            torch.cuda.empty_cache()


def _trial(model: nn.Module, autocast: Callable[[], contextlib.AbstractContextManager], ground: torch.Tensor,
           aerial: torch.Tensor, reserve: int) -> None:
    # One chunk's forward and backward next to `reserve` bytes held aside.
    ballast = torch.empty(reserve, dtype=torch.uint8, device=ground.device)
    with autocast():
        q, r = model(ground), model(aerial)
    torch.autograd.backward((q, r), (torch.ones_like(q), torch.ones_like(r)))
    if ground.device.type == "cuda":
        torch.cuda.synchronize(ground.device)
    del ballast


def _unallocated_optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    # AdamW allocates two moments per parameter, like it in size, at its first step; a
    # resumed optimizer already holds them.
    return sum(2 * p.numel() * p.element_size() for group in optimizer.param_groups
               for p in group["params"] if p not in optimizer.state)


__all__ = ["MARGIN", "ChunkPlan", "balanced_chunk", "largest_fitting", "plan_chunks", "probe_largest_chunk"]
