"""Process-group setup for torchrun, and the few collectives the training loop needs.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and
nothing here touches torch.distributed. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from s4g.runtime import pick_device

# Rank 0 alone evaluates and mines while the others wait in a barrier; on real datasets that
# takes longer than the default collective timeout.
_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank in [0, world_size), its local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device_option: str) -> DistEnv:
    """Join the torchrun process group when WORLD_SIZE > 1; return this process's DistEnv."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_option, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=_TIMEOUT, **kwargs)
    return DistEnv(rank, world, local_rank, device)


def teardown(env: DistEnv) -> None:
    """Leave the process group (no-op for a single process)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op for a single process)."""
    if env.distributed:
        dist.barrier()


def broadcast_from_main(env: DistEnv, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled; for small things such as neighbour lists)."""
    if not env.distributed:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_share(batches: np.ndarray, env: DistEnv) -> np.ndarray:
    """This rank's columns of the global batches: (n, B) -> (n, B / world_size).

    Every rank walks the same global batches in the same order and takes distinct pairs of
    each, so the gathered loss sees exactly the global batch.
    """
    n, b = batches.shape
    if b % env.world_size:  # s4g.train.checks refuses such a --batch-size up front
        raise ValueError(f"batch size {b} is not divisible by the world size {env.world_size}")
    share = b // env.world_size
    return batches[:, env.rank * share:(env.rank + 1) * share]


__all__ = ["DistEnv", "barrier", "broadcast_from_main", "rank_share", "setup", "teardown"]
