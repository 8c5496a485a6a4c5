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
import numpy.typing as npt
import torch

from s4g import sampling
from s4g.errors import UserInputError
from s4g.retrieval.evaluate import Embeddings, as_embeddings
from s4g.retrieval.scoring import duplicate_groups, score_blocks
from s4g.runtime import pick_device

# (query rows, reference rows) per score block: 4096×4096 float32 = 64 MB on the CPU (taller
# query blocks let BLAS reuse each packed reference panel, with bit-identical products under
# MKL; benches/bench_eval.py times the blocks); 4096×32768 = 512 MB on a GPU.
CPU_BLOCK = (4096, 4096)
GPU_BLOCK = (4096, 32768)
_KEY_LOW = 1 << 32


def _check_args(
    q: torch.Tensor, r: torch.Tensor, k: object, exclude: npt.ArrayLike | torch.Tensor
) -> tuple[int, np.ndarray]:
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
    query: Embeddings,
    reference: Embeddings,
    k: int,
    exclude: npt.ArrayLike | torch.Tensor,
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
    with torch.inference_mode():
        # Identical reference rows are scored once, as their lowest row: one product may give
        # two equal rows different last bits, which would order them by rounding, not by row.
        groups = duplicate_groups(r)
        first = np.unique(groups, return_index=True)[1]  # lowest row of each group, by group id
        sizes = np.bincount(groups)
        g_ex = np.where(ex >= 0, groups[np.maximum(ex, 0)], -1)
        # an excluded row's group keeps its other rows: skip the group only when it is alone
        g_ex = np.where((g_ex >= 0) & (sizes[np.maximum(g_ex, 0)] == 1), g_ex, -1)
        # k + 1 groups hold the best k rows even when one of them is the excluded row; where
        # fewer than k_g groups remain after an exclusion the list ends in padding
        k_g = min(k + 1, first.size)
        r_u = r[torch.from_numpy(first).to(dev)] if first.size < r.shape[0] else r
        idx = np.empty((q.shape[0], k_g), dtype=np.int64)
        val = np.empty((q.shape[0], k_g), dtype=np.float32)
        merge = _RustMerge if use_rust else _TorchMerge
        for q0, r0, scores in score_blocks(q, r_u, block):
            q1 = q0 + scores.shape[0]
            if r0 == 0:
                state = merge(scores.shape[0], k_g, g_ex[q0:q1], r_u.shape[0], dev)
            state.add(scores, r0)
            if r0 + scores.shape[1] == r_u.shape[0]:
                idx[q0:q1], val[q0:q1] = state.result()
    return _expand(idx, val, groups, first, ex, k)


class _RustMerge:
    """Running top-k of one query block, merged by s4g.sampling.topk_merge (rows skip `ex`)."""

    def __init__(self, n: int, k: int, ex: np.ndarray, n_ref: int, dev: torch.device) -> None:
        self.k, self.ex = k, ex
        self.idx = np.full((n, k), -1, dtype=np.int64)
        self.val = np.full((n, k), -np.inf, dtype=np.float32)

    def add(self, scores: torch.Tensor, r0: int) -> None:
        self.idx, self.val = sampling.topk_merge(scores.numpy(), r0, self.k, self.ex, self.idx, self.val)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.idx, self.val


class _TorchMerge:
    """Running top-k of one query block with torch.topk (the excluded cell set to -inf)."""

    def __init__(self, n: int, k: int, ex: np.ndarray, n_ref: int, dev: torch.device) -> None:
        self.k = k
        self.ex = torch.from_numpy(ex).to(dev)
        self.rows = torch.arange(n, device=dev)
        self.val = torch.full((n, k), float("-inf"), device=dev)
        # padding index R sorts after every real row among equal (-inf) scores
        self.idx = torch.full((n, k), n_ref, dtype=torch.int64, device=dev)

    def add(self, scores: torch.Tensor, r0: int) -> None:
        r1 = r0 + scores.shape[1]
        hit = (self.ex >= r0) & (self.ex < r1)
        scores[self.rows[hit], self.ex[hit] - r0] = float("-inf")
        val, idx = block_topk(scores, min(self.k, scores.shape[1]))
        cand_val = torch.cat([self.val, val], dim=1)
        cand_idx = torch.cat([self.idx, idx + r0], dim=1)
        # (score desc, index asc): sort by index, then a stable sort by score
        by_idx = cand_idx.argsort(dim=1)
        cand_val, cand_idx = cand_val.gather(1, by_idx), cand_idx.gather(1, by_idx)
        order = cand_val.sort(dim=1, descending=True, stable=True).indices[:, : self.k]
        self.val, self.idx = cand_val.gather(1, order), cand_idx.gather(1, order)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.idx.cpu().numpy(), self.val.cpu().numpy()


def _expand(idx: np.ndarray, val: np.ndarray, groups: np.ndarray, first: np.ndarray, ex: np.ndarray,
            k: int) -> np.ndarray:
    """(Q, k) reference rows from each query's best groups (idx: group ids, val: their
    scores, best first): every row of a group takes its group's score, so rows of equal
    score are ordered by row across groups too; the excluded row is dropped."""
    if first.size == groups.size:  # no duplicates: group g is row g, excluded rows were skipped
        return idx[:, :k]
    members = np.argsort(groups, kind="stable")  # each group's rows ascending, groups by id
    starts = np.concatenate([[0], np.cumsum(np.bincount(groups))])
    out = np.empty((idx.shape[0], k), dtype=np.int64)
    for i in range(idx.shape[0]):
        real = (idx[i] >= 0) & (idx[i] < first.size)  # padding: -1 (Rust) or the group count (torch)
        runs = [members[starts[g] : starts[g + 1]] for g in idx[i][real]]
        score = np.repeat(val[i][real], [c.size for c in runs])
        cand = np.concatenate(runs)
        cand = cand[np.lexsort((cand, -score))]
        out[i] = cand[cand != ex[i]][:k]
    return out


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
    out: np.ndarray = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


__all__ = ["CPU_BLOCK", "GPU_BLOCK", "block_topk", "class_query_embeddings", "similar_references"]
