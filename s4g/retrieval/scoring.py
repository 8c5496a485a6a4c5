"""The one blocked score product that metrics, mining and the index search read.

Scores are dot products computed one (query block × reference block) at a time into a
reused buffer, so the Q×R matrix is never held. Every score that decides a rank, a hit, a
top-k list or a mined neighbour is the value of its cell in one of these block products:
the callers reduce the block in place and never recompute a cell elsewhere.

A matrix product does not promise the same bits for the same (query, reference) pair in
differently shaped products, nor for identical columns of one product (MKL's single-row
path sums in another order, so two equal reference rows can score one ulp apart within one
call). `duplicate_groups` lets a caller decide ties between identical rows by the rows
themselves instead of by their rounded scores.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def _rows(r, r0: int, r1: int, device: torch.device) -> torch.Tensor:
    """Reference rows r0 .. r1-1 as a float32 tensor on `device` (a view when r already is one)."""
    if isinstance(r, torch.Tensor):
        return r[r0:r1]
    rows = np.asarray(r[r0:r1])
    if rows.dtype != np.float32 or not rows.flags.writeable:  # torch wraps writable arrays only
        rows = rows.astype(np.float32)
    return torch.from_numpy(rows).to(device)


def score_blocks(
    q: torch.Tensor, r, block: tuple[int, int]
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (q0, r0, scores) for every block, query blocks outermost, references ascending.

    q (Q, D) float32 tensor; r (R, D) float32 tensor on q's device, or a numpy array (a
    memory map, float16 allowed) read one block at a time; block (query rows, reference rows).
    scores: (q1 - q0, r1 - r0) float32 = q[q0:q1] @ r[r0:r1].T, a view of one buffer that the
    next block overwrites; the caller may modify it in place.
    """
    bq, br = block
    n_q, n_r = q.shape[0], r.shape[0]
    buf = torch.empty(min(bq, n_q) * min(br, n_r), device=q.device)
    for q0 in range(0, n_q, bq):
        q1 = min(n_q, q0 + bq)
        for r0 in range(0, n_r, br):
            r1 = min(n_r, r0 + br)
            # a flat buffer: every (possibly partial) block is a contiguous view for out=
            scores = buf[: (q1 - q0) * (r1 - r0)].view(q1 - q0, r1 - r0)
            torch.matmul(q[q0:q1], _rows(r, r0, r1, q.device).T, out=scores)
            yield q0, r0, scores


#: Leading columns hashed to find candidate twins (they tell almost every pair of distinct
#: embeddings apart); only rows whose hashes collide are compared whole.
_HEAD = 4
_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
                        dtype=np.uint64).view(np.int64)


def _bits(rows: torch.Tensor) -> np.ndarray:
    """(N, D) int32 bit patterns of float32 rows, -0.0 read as 0.0."""
    return np.ascontiguousarray((rows + 0.0).view(torch.int32).cpu().numpy())


def duplicate_groups(r: torch.Tensor) -> np.ndarray:
    """(R,) int64 group of each reference row: rows with equal values (-0.0 equals 0.0) share
    one; groups are numbered in the order of their lowest row (0, 1, ... as rows ascend).

    r: (R, D) float32. Rows are grouped exactly by their bits: a hash of the leading columns
    (O(R)) sets apart every row whose hash no other row has; the rest are compared in full,
    so the cost beyond O(R) follows the rows with a twin (or a colliding hash), not R·D.
    """
    n, d = r.shape
    head = _bits(r[:, :_HEAD])
    key = head.astype(np.int64) @ _MULTIPLIERS[: head.shape[1]]  # wraps around: a hash
    _, ids = np.unique(key, return_inverse=True)
    ids = ids.reshape(-1)
    shared = np.flatnonzero(np.bincount(ids)[ids] > 1)
    if shared.size:
        rows = _bits(r[torch.from_numpy(shared).to(r.device)])
        exact = np.unique(rows.view(np.dtype((np.void, 4 * d))).reshape(-1), return_inverse=True)[1]
        ids[shared] = ids.max() + 1 + exact.reshape(-1)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    renumber = np.empty(first.size, dtype=np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(first.size)
    return renumber[inverse.reshape(-1)]


__all__ = ["duplicate_groups", "score_blocks"]
