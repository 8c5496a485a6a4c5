"""Process-group setup for torchrun, and the few collectives training and inference need.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and
nothing here touches torch.distributed. NCCL on CUDA, gloo on CPU.

Sharded inference (s4g.retrieval.embed with an env): every rank embeds a contiguous run of whole
batches (`batch_shares`), the rows are gathered on rank 0 only (`gather_rows`; the others
would hold a copy they never read: 0.6 GB for VIGOR's test set in float32), rank 0 alone
scores them (`main_result`) and every rank receives the result. A failure on one rank is
raised on every rank (`exchange`, `main_result`), so no rank waits for one that has stopped;
under torchrun a failure anywhere else is named on every rank too (`failures_named`).

Several nodes: LOCAL_RANK picks the GPU, global rank 0 writes; what lives in node-local
folders is prepared once per node (`node_first`). torchrun --max-restarts: `elastic` tells a
restarted group from a first start (s4g.app.jobs.train.loop continues the run from its last.pt).

Timeout: a collective waits at most S4G_DIST_TIMEOUT_MIN minutes (default 30) for the other
ranks. The work that one rank does alone while the others wait is small: scoring the gathered
embeddings and writing checkpoints (seconds on a GPU, a few minutes on a CPU at VIGOR scale),
and preparing a synthetic world before the first step; raise it for a very large one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from s4g.errors import UserInputError
from s4g.runtime import pick_device

TIMEOUT_ENV = "S4G_DIST_TIMEOUT_MIN"
_DEFAULT_TIMEOUT_MIN = 30.0
_GATHER_BYTES = 64 << 20  # bytes of rows sent per gather round, per rank: bounds rank 0's buffers
_PEER_REPORT_WAIT_S = 5.0
_store: dist.Store | None = None  # torchrun's store, once setup() joined through it
T = TypeVar("T")


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
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        global _store
        _store = _attempt_store(rank, world)
        if _store is not None:
            kwargs["store"] = _store
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout(), **kwargs)
    return DistEnv(rank, world, local_rank, device)


def _attempt_store(rank: int, world: int) -> dist.Store | None:
    """torchrun's store (MASTER_ADDR:MASTER_PORT) with its keys prefixed by the restart count;
    None outside torchrun. torchrun keeps one store for every attempt of a job, so a group it
    restarts would find the keys its killed predecessor left there and connect to the dead
    workers' addresses ("connectFullMesh failed ... Connection refused", pytorch/pytorch#167288)."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or "MASTER_ADDR" not in os.environ:
        return None
    # the agent serves the store itself when it says so; otherwise rank 0 does, as with env://
    agent_serves = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_serves and rank == 0, timeout=timeout(), multi_tenant=True)
    return dist.PrefixStore(f"s4g/attempt-{attempt}", store)


@contextlib.contextmanager
def failures_named(env: DistEnv) -> Iterator[None]:
    """Under torchrun: an exception on this rank is written to the job's store before it
    propagates, and a rank whose collective breaks because another rank stopped (gloo:
    "Connection reset by peer") raises that rank's error instead, so every node's output
    names the cause. Elsewhere, and for a rank that fails alone, exceptions pass unchanged."""
    try:
        yield
    except Exception as err:
        if _store is None or not env.distributed:
            raise
        store = _store
        if isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError):
            # the failing rank writes its key before its sockets close: wait briefly for it
            deadline = time.monotonic() + _PEER_REPORT_WAIT_S
            while True:
                keys = [f"failed/{r}" for r in range(env.world_size) if r != env.rank]
                found = [k for k in keys if store.check([k])]
                if found:
                    rank = int(found[0].rsplit("/", 1)[1])
                    kind, message = json.loads(store.get(found[0]).decode())
                    raise _peer_error(rank, kind, message) from None
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        with contextlib.suppress(Exception):  # the store may be gone with the agent
            store.set(f"failed/{env.rank}", json.dumps(_describe(err)))
        raise


def timeout() -> datetime.timedelta:
    """How long a collective waits for the other ranks: $S4G_DIST_TIMEOUT_MIN minutes, default 30."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return datetime.timedelta(minutes=_DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise UserInputError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of minutes")
    return datetime.timedelta(minutes=minutes)


def teardown(env: DistEnv) -> None:
    """Leave the process group (no-op for a single process)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op for a single process)."""
    if env.distributed:
        dist.barrier()


def rank_share(batches: np.ndarray, env: DistEnv) -> np.ndarray:
    """This rank's columns of the global batches: (n, B) -> (n, B / world_size).

    Every rank walks the same global batches in the same order and takes distinct pairs of
    each, so the gathered loss sees exactly the global batch.
    """
    n, b = batches.shape
    if b % env.world_size:  # s4g.app.jobs.train.checks refuses such a --batch-size up front
        raise ValueError(f"batch size {b} is not divisible by the world size {env.world_size}")
    share = b // env.world_size
    return batches[:, env.rank * share:(env.rank + 1) * share]


def batch_shares(n: int, batch_size: int, world_size: int) -> list[range]:
    """Each rank's rows of n items embedded batch_size at a time: rank r takes the contiguous
    batches [r * nb // W, (r + 1) * nb // W) of the nb = ceil(n / batch_size) batches one
    process would form (the short last batch included), so every item meets the same batch
    companions as in one process, and shares differ by at most one batch."""
    n_batches = -(-n // batch_size)
    bounds = [min(n, (r * n_batches // world_size) * batch_size) for r in range(world_size + 1)]
    return [range(bounds[r], bounds[r + 1]) for r in range(world_size)]


def exchange(env: DistEnv, info: Any, failure: Exception | None = None) -> list[Any]:
    """Every rank's `info`, in rank order (collective, pickled: small values only).

    failure: the exception this rank's own work raised, or None. When any rank failed, every
    rank raises: the failing rank its own exception, the others the same kind (a
    UserInputError or an out-of-memory error keeps its message), so none is left waiting.
    """
    reports: list[Any] = [None] * env.world_size
    dist.all_gather_object(reports, ("failed", *_describe(failure)) if failure is not None else ("ok", info))
    if failure is not None:
        raise failure
    for rank, report in enumerate(reports):
        if report[0] == "failed":
            raise _peer_error(rank, *report[1:])
    return [report[1] for report in reports]


def node_first(env: DistEnv, fn: Callable[[], T]) -> T:
    """fn() on every rank, local rank 0 of each node before the node's other ranks: what it
    prepares in a node-local place (the synthetic world in the node's cache folder) the others
    then find ready. A failure on any rank is raised on every rank, none waits for it."""
    if not env.distributed:
        return fn()
    result: Any = None
    for turn in (True, False):
        failure = None
        if (env.local_rank == 0) == turn:
            try:
                result = fn()
            except Exception as err:  # noqa: BLE001 - re-raised on every rank by exchange()
                failure = err
        exchange(env, None, failure)
    return result


@dataclass(frozen=True)
class Elastic:
    """torchrun's restart settings for this worker: its run id (--rdzv-id; a fresh one per
    --standalone job), how many times the group was restarted, and --max-restarts."""

    run_id: str
    restarts: int
    max_restarts: int


def elastic() -> Elastic | None:
    """This worker's Elastic when torchrun may restart its group (--max-restarts > 0), else None."""
    max_restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS") or 0)
    if max_restarts <= 0:
        return None
    return Elastic(os.environ.get("TORCHELASTIC_RUN_ID", ""), int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0),
                   max_restarts)


def main_result(env: DistEnv | None, fn: Callable[[], T]) -> T:
    """fn() computed by rank 0 alone, returned on every rank (pickled: metrics, neighbour
    lists). An exception in fn is raised on every rank. Without a process group: fn()."""
    if env is None or not env.distributed:
        return fn()
    box: list[Any] = [None]
    failure = None
    if env.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            failure, box[0] = err, ("failed", *_describe(err))
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    if box[0][0] == "failed":
        raise _peer_error(0, *box[0][1:])
    return box[0][1]


def gather_rows(env: DistEnv, rows: np.ndarray | None, counts: list[int], dim: int) -> np.ndarray | None:
    """Rank 0: every rank's float32 rows stacked in rank order, (sum(counts), dim); others: None.

    rows: this rank's (counts[rank], dim) float32 array (None when counts[rank] is 0). Sent in
    rounds of at most _GATHER_BYTES per rank, through the device with NCCL.
    """
    dev = env.device if dist.get_backend() == "nccl" else torch.device("cpu")
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((int(starts[-1]), dim), dtype=np.float32) if env.is_main else None
    step = max(1, _GATHER_BYTES // (4 * dim))
    for s in range(0, max(counts), step):
        size = min(step, max(counts) - s)
        piece = torch.zeros((size, dim), dtype=torch.float32, device=dev)
        if rows is not None and s < len(rows):
            mine = torch.from_numpy(np.ascontiguousarray(rows[s : s + size], dtype=np.float32))
            piece[: len(mine)] = mine.to(dev)
        bucket = [torch.empty_like(piece) for _ in range(env.world_size)] if env.is_main else None
        dist.gather(piece, bucket, dst=0)
        if out is not None and bucket is not None:  # both rank 0's
            for rank, got in enumerate(bucket):
                take = max(0, min(size, counts[rank] - s))
                out[starts[rank] + s : starts[rank] + s + take] = got[:take].cpu().numpy()
    return out


def _describe(err: Exception) -> tuple[str, str]:
    if isinstance(err, UserInputError):
        return "user", str(err)
    if isinstance(err, torch.OutOfMemoryError):
        return "memory", str(err)
    return "bug", f"{type(err).__name__}: {err}"


def _peer_error(rank: int, kind: str, message: str) -> Exception:
    """The exception a rank raises for another rank's failure."""
    if kind == "user":
        return UserInputError(message)
    if kind == "memory":
        return torch.OutOfMemoryError(f"rank {rank}: {message}")
    return RuntimeError(f"rank {rank} failed with {message} (its traceback is in its own output)")


__all__ = ["TIMEOUT_ENV", "DistEnv", "Elastic", "barrier", "batch_shares", "elastic", "exchange", "failures_named",
           "gather_rows", "main_result", "node_first", "rank_share", "setup", "teardown", "timeout"]
