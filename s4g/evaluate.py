"""Streaming retrieval metrics: R@k, R@1%, University-1652 AP and VIGOR hit rate.

The Q×R score matrix is never held: scores are computed one (query block × reference block)
at a time with a torch matmul (on the GPU when there is one) and reduced on the spot, so the
extra memory is a few block-sized buffers whatever Q and R are.

Definitions (design.md). Positives of a query are the references with its label.
- rank: number of non-positive references scoring strictly higher than the query's best
  positive. R@k = % of queries with rank < k; R@1% uses k = max(1, round(R / 100)) with
  Python's round, as the Sample4Geo evaluation does.
- AP (University-1652): rank the references by (score descending, positives before
  non-positives of equal score — the same "strictly higher" rule as rank —, index ascending).
  Then the i-th positive (0-based) sits at r_i = i + n_i, where n_i is the number of
  non-positives scoring strictly higher than it; AP = mean over positives of
  ((i / r_i, or 1 when r_i = 0) + (i + 1) / (r_i + 1)) / 2. The value does not depend on
  the order of positives with equal scores.
- hit rate (VIGOR): the top-1 reference in the same order is the positive (rank 0) or,
  otherwise, the lowest-index non-positive with the highest score, and it is a hit when its
  label is among the query's semi-positive labels.

Exactness. One streamed pass needs each query's positive scores beforehand; they are
computed first with the same kind of kernel (a float32 matmul of the query block against the
gathered positive rows). Scores from two different matmul calls can differ in the last bit,
so a non-positive that ties a positive only up to rounding may be counted either way — the
same ambiguity any float implementation has; exact ties (e.g. duplicate embeddings) land on
identical values in practice, and the tests use embeddings whose dot products are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from s4g.errors import UserInputError
from s4g.runtime import pick_device

# (query rows, reference rows) per block. CPU: 2048×8192 float32 = 64 MB of scores (+128 MB
# of int64 bins with several positives), big enough for the matmul to run near peak.
# GPU: 4096×32768 = 512 MB of scores (+1 GiB of bins).
CPU_BLOCK = (2048, 8192)
GPU_BLOCK = (4096, 32768)
_FINITE_CHUNK = 1 << 22  # elements per finiteness check
_POS_CHUNK = 256  # queries per positive-score matmul (extra work ~ 256 / R of the main pass)


def as_embeddings(x, name: str, device: torch.device) -> torch.Tensor:
    """(N, D) float32 contiguous tensor on `device`; UserInputError for bad shape or NaN/inf."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise UserInputError(f"{name}: expected a non-empty (N, D) array, got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float32).contiguous()
    # in row chunks: torch.isfinite allocates ~7 bytes of temporaries per element
    step = max(1, _FINITE_CHUNK // t.shape[1])
    bad = torch.cat([~torch.isfinite(t[i : i + step]).all(dim=1) for i in range(0, t.shape[0], step)])
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise UserInputError(
            f"{name}: {int(bad.sum())} row(s) hold NaN or inf (first rows {rows}); "
            "the model or its checkpoint produced invalid embeddings"
        )
    return t


def _labels(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if a.shape != (n,):
        raise UserInputError(f"{name}: expected shape ({n},) to match the embeddings, got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise UserInputError(f"{name}: expected integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def positive_pairs(query_labels: np.ndarray, reference_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (Q+1,), ref_rows (sum P,)) int64: query q's positives are
    ref_rows[offsets[q]:offsets[q+1]], ascending. ValueError names queries without positive."""
    order = np.argsort(reference_labels, kind="stable")
    sorted_labels = reference_labels[order]
    lo = np.searchsorted(sorted_labels, query_labels, side="left")
    hi = np.searchsorted(sorted_labels, query_labels, side="right")
    counts = hi - lo
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        raise UserInputError(
            f"{missing.size} of {query_labels.size} queries have no positive reference "
            f"(query rows {missing[:5].tolist()}, labels {query_labels[missing[:5]].tolist()}); "
            "every query label must occur among the reference labels"
        )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # Gather each query's run of the sorted labels without a Python loop over queries.
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
    ref_rows = order[np.repeat(lo, counts) + within]
    for_sort = np.repeat(np.arange(query_labels.size), counts)
    ref_rows = ref_rows[np.lexsort((ref_rows, for_sort))]
    return offsets, ref_rows.astype(np.int64)


def _positive_scores(q: torch.Tensor, r: torch.Tensor, offsets: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """(Q, Pmax) float32 positive scores sorted ascending, padded on the right with +inf."""
    n_q = q.shape[0]
    counts = np.diff(offsets)
    p_max = int(counts.max())
    out = torch.full((n_q, p_max), float("inf"), device=q.device)
    for s in range(0, n_q, _POS_CHUNK):
        e = min(n_q, s + _POS_CHUNK)
        sub = rows[offsets[s] : offsets[e]]
        uniq, inverse = np.unique(sub, return_inverse=True)
        scores = q[s:e] @ r[torch.from_numpy(uniq).to(q.device)].T  # same gemm kind as the pass
        qi = np.repeat(np.arange(e - s), counts[s:e])
        col = np.arange(sub.size) - np.repeat(offsets[s:e] - offsets[s], counts[s:e])
        vals = scores[torch.from_numpy(qi).to(q.device), torch.from_numpy(inverse.ravel()).to(q.device)]
        out[torch.from_numpy(qi + s).to(q.device), torch.from_numpy(col).to(q.device)] = vals
    return out.sort(dim=1).values


_DIRECT_MAX = 4  # up to this many positives per query: one compare-and-count pass each


class _Accumulator:
    """Per-query counts gathered over reference blocks.

    above[q, j] = number of non-positives scoring strictly higher than q's j-th smallest
    positive score. Counting is a float32 compare written into a float buffer and a float
    row sum (torch's integer row reductions are several times slower on the CPU); block rows
    hold at most 2^24 entries, so the float sums are exact.
    """

    def __init__(self, pos_sorted: torch.Tensor, want_top1: bool) -> None:
        n_q, p_max = pos_sorted.shape
        dev = pos_sorted.device
        self.pos_sorted = pos_sorted
        self.p_max = p_max
        self.above = torch.zeros((n_q, p_max), dtype=torch.int64, device=dev)
        self.flags: torch.Tensor | None = None
        self.best = torch.full((n_q,), float("-inf"), device=dev) if want_top1 else None
        self.best_idx = torch.full((n_q,), -1, dtype=torch.int64, device=dev) if want_top1 else None

    def add(self, scores: torch.Tensor, q0: int, col_offset: int) -> None:
        """scores: (bq, br) block with positives already set to -inf."""
        bq = scores.shape[0]
        pos = self.pos_sorted[q0 : q0 + bq]
        if self.p_max <= _DIRECT_MAX:
            if self.flags is None or self.flags.numel() < scores.numel():
                self.flags = torch.empty(scores.numel(), device=scores.device)
            flags = self.flags[: scores.numel()].view_as(scores)
            for j in range(self.p_max):  # +inf padding is never exceeded: adds 0
                self.above[q0 : q0 + bq, j] += torch.gt(scores, pos[:, j : j + 1], out=flags).sum(dim=1).long()
        else:
            # bin = number of this query's positives strictly below the score (the +inf
            # padding never is); non-positives in bin b lie above positives 0 .. b-1.
            bins = torch.searchsorted(pos, scores, side="left")
            bins += torch.arange(bq, device=scores.device).unsqueeze(1) * (self.p_max + 1)
            hist = torch.bincount(bins.view(-1), minlength=bq * (self.p_max + 1)).view(bq, -1)
            self.above[q0 : q0 + bq] += hist.flip(1).cumsum(1).flip(1)[:, 1:]
        if self.best is not None:
            # argmax is documented to return the first maximal index: lowest index wins ties
            idx = scores.argmax(dim=1)
            val = scores.gather(1, idx.unsqueeze(1)).squeeze(1)
            # strictly greater: an earlier (lower-index) block keeps ties
            better = val > self.best[q0 : q0 + bq]
            self.best[q0 : q0 + bq] = torch.where(better, val, self.best[q0 : q0 + bq])
            self.best_idx[q0 : q0 + bq] = torch.where(better, idx + col_offset, self.best_idx[q0 : q0 + bq])


def _stream(q, r, offsets, rows, acc: _Accumulator, block: tuple[int, int]) -> None:
    bq, br = block
    dev = q.device
    counts = np.diff(offsets)
    pair_q = np.repeat(np.arange(q.shape[0], dtype=np.int64), counts)
    # flat buffer so that every (possibly partial) block is a contiguous view for out=
    buf = torch.empty(bq * br, device=dev)
    for q0 in range(0, q.shape[0], bq):
        q1 = min(q.shape[0], q0 + bq)
        pq = pair_q[offsets[q0] : offsets[q1]]
        pr = rows[offsets[q0] : offsets[q1]]
        for r0 in range(0, r.shape[0], br):
            r1 = min(r.shape[0], r0 + br)
            scores = buf[: (q1 - q0) * (r1 - r0)].view(q1 - q0, r1 - r0)
            torch.matmul(q[q0:q1], r[r0:r1].T, out=scores)
            inside = (pr >= r0) & (pr < r1)
            if inside.any():  # mask this block's positives
                qi = torch.from_numpy(pq[inside] - q0).to(dev)
                ri = torch.from_numpy(pr[inside] - r0).to(dev)
                scores[qi, ri] = float("-inf")
            acc.add(scores, q0, r0)


def retrieval_metrics(
    query,
    reference,
    query_labels,
    reference_labels,
    semi_positives=None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    device: str | torch.device | None = None,
    block: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Retrieval metrics of query embeddings against reference embeddings, in percent.

    query (Q, D), reference (R, D): float embeddings (numpy or torch), scored by dot product.
    query_labels (Q,), reference_labels (R,): integer labels; a reference is a positive of a
      query when their labels are equal. Every query needs at least one positive; references
      with labels no query has are distractors.
    semi_positives: (Q, S) integer labels of each query's semi-positive references, padded
      with -1 (VIGOR), or None.
    ks: the k of the R@k entries. device: where the matmuls run (default cuda if available).
    block: (query rows, reference rows) per score block (default CPU_BLOCK / GPU_BLOCK).
      Extra memory ~ 8 bytes per block cell (scores + count flags; 16 with more than 4
      positives per query) plus O(Q × max positives per query).
    -> {"R@k" for k in ks, "R@1%", "AP"} (+ "hit_rate" when semi_positives is given), floats
       in percent. Definitions and tie rules: see the module docstring.
    Raises UserInputError (a ValueError) for bad shapes, NaN/inf embeddings, queries without
    a positive.
    """
    dev = pick_device(None if device is None else str(device))
    q = as_embeddings(query, "query embeddings", dev)
    r = as_embeddings(reference, "reference embeddings", dev)
    if q.shape[1] != r.shape[1]:
        raise UserInputError(
            f"query and reference embeddings differ in dimension: {q.shape[1]} vs {r.shape[1]}"
        )
    ql = _labels(query_labels, q.shape[0], "query_labels")
    rl = _labels(reference_labels, r.shape[0], "reference_labels")
    semi = None
    if semi_positives is not None:
        semi = np.asarray(semi_positives.cpu() if isinstance(semi_positives, torch.Tensor) else semi_positives)
        if semi.ndim != 2 or semi.shape[0] != q.shape[0] or not np.issubdtype(semi.dtype, np.integer):
            raise UserInputError(
                f"semi_positives: expected an integer ({q.shape[0]}, S) array, got "
                f"{semi.dtype} {semi.shape}"
            )
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise UserInputError(f"ks: every k must be at least 1, got {ks}")
    block = block or (GPU_BLOCK if dev.type == "cuda" else CPU_BLOCK)
    if min(block) < 1 or block[1] > 2**24:
        raise UserInputError(f"block: expected two positive sizes, the second at most 2**24, got {block}")

    offsets, rows = positive_pairs(ql, rl)
    with torch.inference_mode():
        acc = _Accumulator(_positive_scores(q, r, offsets, rows), want_top1=semi is not None)
        _stream(q, r, offsets, rows, acc, block)
        above = acc.above.cpu().numpy()
        best_idx = acc.best_idx.cpu().numpy() if semi is not None else None
    return _summarise(above, np.diff(offsets), r.shape[0], ks, rl, semi, best_idx)


def _summarise(n_above, counts, n_ref, ks, rl, semi, best_idx) -> dict[str, float]:
    # n_above[q, j] = non-positives strictly above the j-th smallest positive score.
    n_q, p_max = n_above.shape
    rank = n_above[np.arange(n_q), counts - 1]  # best positive = largest = index P_q - 1
    out: dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = 100.0 * float(np.mean(rank < k))
    out["R@1%"] = 100.0 * float(np.mean(rank < max(1, round(n_ref / 100))))
    # i-th positive in ranking order (descending) = column P_q - 1 - i of the ascending table.
    i = np.arange(p_max)[None, :]
    valid = i < counts[:, None]
    cols = np.clip(counts[:, None] - 1 - i, 0, p_max - 1)
    r_i = i + np.take_along_axis(n_above, cols, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec_before = np.where(r_i == 0, 1.0, i / np.maximum(r_i, 1))
    terms = np.where(valid, (prec_before + (i + 1) / (r_i + 1)) / 2.0, 0.0)
    out["AP"] = 100.0 * float(np.mean(terms.sum(axis=1) / counts))
    if semi is not None:
        top_label = rl[best_idx]
        semi_hit = ((semi == top_label[:, None]) & (semi != -1)).any(axis=1) & (best_idx >= 0)
        out["hit_rate"] = 100.0 * float(np.mean((rank == 0) | semi_hit))
    return out


__all__ = ["CPU_BLOCK", "GPU_BLOCK", "as_embeddings", "positive_pairs", "retrieval_metrics"]
