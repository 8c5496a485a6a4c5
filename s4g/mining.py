"""Hard-negative mining: for each query row, the k most similar reference rows.

Scores are dot products computed one (query block × reference block) at a time with a torch
matmul; each block's best k are merged into a running (Q_block, k) list, so memory stays a
few block-sized buffers. The per-row selection runs in Rust (`s4g.sampling.topk_merge`,
rayon, GIL released) on the CPU and as torch.topk on a GPU; both give the same rows.

Order: score descending, equal scores by lower reference index — exactly the order of a
stable descending sort of each score row.
"""

from __future__ import annotations

import numpy as np
import torch

from s4g import sampling
from s4g.errors import UserInputError
from s4g.evaluate import as_embeddings
from s4g.runtime import pick_device

# (query rows, reference rows) per score block: 4096×4096 float32 = 64 MB on the CPU (taller
# query blocks let BLAS reuse each packed reference panel, with bit-identical products under
# MKL; benches/bench_eval.py times the blocks); 4096×32768 = 512 MB on a GPU.
CPU_BLOCK = (4096, 4096)
GPU_BLOCK = (4096, 32768)
_KEY_LOW = 1 << 32


def _check_args(q: torch.Tensor, r: torch.Tensor, k, exclude) -> tuple[int, np.ndarray]:
    if q.shape[1] != r.shape[1]:
        raise UserInputError(
            f"query and reference embeddings differ in dimension: {q.shape[1]} vs {r.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < r.shape[0]:
        raise UserInputError(
            f"k must be an integer in [1, {r.shape[0] - 1}] (fewer than the {r.shape[0]} "
            f"references), got {k!r}"
        )
    ex = np.asarray(exclude.cpu() if isinstance(exclude, torch.Tensor) else exclude)
    if ex.shape != (q.shape[0],) or not np.issubdtype(ex.dtype, np.integer):
        raise UserInputError(
            f"exclude: expected an integer ({q.shape[0]},) array of reference rows (-1 = none), "
            f"got {ex.dtype} {ex.shape}"
        )
    if ex.size and (ex.min() < -1 or ex.max() >= r.shape[0]):
        raise UserInputError(f"exclude: reference rows must lie in [-1, {r.shape[0] - 1}]")
    return int(k), ex.astype(np.int64)


def similar_references(
    query,
    reference,
    k: int,
    exclude,
    *,
    device: str | torch.device | None = None,
    block: tuple[int, int] | None = None,
    method: str = "auto",
) -> np.ndarray:
    """The k reference rows most similar to each query row.

    query (Q, D), reference (R, D): float32 embeddings (numpy or torch, normalised), scored
      by dot product. exclude (Q,) int64: a reference row to skip per query, -1 for none.
    k: 1 <= k < R. device: where matmuls run (default cuda if available).
    method: "auto" (the Rust merge on the CPU, torch on a GPU), "torch",
      or "rust" (CPU only).
    -> (Q, k) int64 reference rows, most similar first, equal scores by lower row.
    Raises UserInputError (ValueError) for wrong shapes, NaN/inf embeddings, k out of range.
    """
    dev = pick_device(None if device is None else str(device))
    q = as_embeddings(query, "query embeddings", dev)
    r = as_embeddings(reference, "reference embeddings", dev)
    k, ex = _check_args(q, r, k, exclude)
    if method not in ("auto", "torch", "rust"):
        raise UserInputError(f"method must be auto, torch or rust, got {method!r}")
    use_rust = method == "rust" or (method == "auto" and dev.type == "cpu")
    if use_rust and dev.type != "cpu":
        raise UserInputError("method='rust' runs on the CPU only; pass device='cpu'")
    block = block or (GPU_BLOCK if dev.type == "cuda" else CPU_BLOCK)
    out = np.empty((q.shape[0], k), dtype=np.int64)
    with torch.inference_mode():
        for q0 in range(0, q.shape[0], block[0]):
            q1 = min(q.shape[0], q0 + block[0])
            run = _rows_rust if use_rust else _rows_torch
            out[q0:q1] = run(q[q0:q1], r, k, ex[q0:q1], block[1])
    return out


def _blocks(q: torch.Tensor, r: torch.Tensor, ex_t: torch.Tensor, br: int):
    """Yield (r0, scores) with each query's excluded row set to -inf; scores reuse a buffer."""
    buf = torch.empty(q.shape[0] * br, device=q.device)
    rows = torch.arange(q.shape[0], device=q.device)
    for r0 in range(0, r.shape[0], br):
        r1 = min(r.shape[0], r0 + br)
        scores = buf[: q.shape[0] * (r1 - r0)].view(q.shape[0], r1 - r0)
        torch.matmul(q, r[r0:r1].T, out=scores)
        hit = (ex_t >= r0) & (ex_t < r1)
        scores[rows[hit], ex_t[hit] - r0] = float("-inf")
        yield r0, scores


def _rows_rust(q: torch.Tensor, r: torch.Tensor, k: int, ex: np.ndarray, br: int) -> np.ndarray:
    best_idx = np.full((q.shape[0], k), -1, dtype=np.int64)
    best_val = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    # Rust skips the excluded row itself, so no -inf masking is needed here.
    ex_none = torch.full_like(torch.from_numpy(ex), -1)
    for r0, scores in _blocks(q, r, ex_none, br):
        best_idx, best_val = sampling.topk_merge(scores.numpy(), r0, k, ex, best_idx, best_val)
    return best_idx


def _rows_torch(q: torch.Tensor, r: torch.Tensor, k: int, ex: np.ndarray, br: int) -> np.ndarray:
    dev = q.device
    best_val = torch.full((q.shape[0], k), float("-inf"), device=dev)
    # padding index R sorts after every real row among equal (-inf) scores
    best_idx = torch.full((q.shape[0], k), r.shape[0], dtype=torch.int64, device=dev)
    for r0, scores in _blocks(q, r, torch.from_numpy(ex).to(dev), br):
        val, idx = block_topk(scores, min(k, scores.shape[1]))
        cand_val = torch.cat([best_val, val], dim=1)
        cand_idx = torch.cat([best_idx, idx + r0], dim=1)
        # (score desc, index asc): sort by index, then a stable sort by score
        by_idx = cand_idx.argsort(dim=1)
        cand_val, cand_idx = cand_val.gather(1, by_idx), cand_idx.gather(1, by_idx)
        order = cand_val.sort(dim=1, descending=True, stable=True).indices[:, :k]
        best_val, best_idx = cand_val.gather(1, order), cand_idx.gather(1, order)
    return best_idx.cpu().numpy()


def block_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k of each row of scores (n, m) float32 by (score desc, column asc), unsorted.

    torch.topk picks an arbitrary subset of values tied with the k-th; rows where such a tie
    straddles the cut (rare with real embeddings) are redone with exact integer keys.
    """
    val, idx = torch.topk(scores, k, dim=1, sorted=False)
    kth = val.min(dim=1, keepdim=True).values
    straddle = (scores == kth).sum(dim=1) > (val == kth).sum(dim=1)
    if bool(straddle.any()):
        rows = torch.nonzero(straddle).flatten()
        idx[rows] = _exact_topk(scores[rows], k)
        val[rows] = scores[rows].gather(1, idx[rows])
    return val, idx


def _exact_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of the top k by (score desc, column asc), via unique int64 keys."""
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0
    # monotone map float32 -> int32: negative floats have their magnitude bits reversed
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    cols = torch.arange(scores.shape[1], device=scores.device, dtype=torch.int64)
    keys = ordered * _KEY_LOW + (_KEY_LOW - 1 - cols)
    return torch.topk(keys, k, dim=1, sorted=False).indices


def class_query_embeddings(query_emb: np.ndarray, pair_class: np.ndarray, reference_emb: np.ndarray) -> np.ndarray:
    """(C, D) float32: per class, the L2-normalised mean of its pairs' query embeddings.

    A class with several pairs (University-1652: ~54 drone views per building) is scored by
    the mean direction of its views; a class without any pair (never sampled in a batch)
    falls back to its own reference embedding so that every row is a unit vector.
    """
    n_cls, dim = reference_emb.shape
    sums = np.zeros((n_cls, dim), dtype=np.float64)
    np.add.at(sums, pair_class, query_emb)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    empty = norms[:, 0] == 0
    sums[empty] = reference_emb[empty]
    norms[empty] = np.linalg.norm(reference_emb[empty], axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


__all__ = ["CPU_BLOCK", "GPU_BLOCK", "block_topk", "class_query_embeddings", "similar_references"]
