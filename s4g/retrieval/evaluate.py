"""Streaming retrieval metrics: R@k, R@1%, University-1652 AP and VIGOR hit rate.

The Q×R score matrix is never held: scores are computed one (query block × reference block)
at a time with a torch matmul (on the GPU when there is one) and reduced on the spot, so the
extra memory is a few block-sized buffers whatever Q and R are.

Definitions, as the evaluation code behind the published numbers computes them.
Positives of a query are the references with its label; its best positive is the one with
the highest score. R is the number of references.
- rank: number of non-positive references scoring strictly higher than the best positive (a
  non-positive that ties it does not count). R@k = % of queries with rank < k, under both
  protocols (University-1652 reports CMC[k-1], the same count).
- R@1% follows `protocol`:
  "sample4geo" (Sample4Geo's CVUSA, CVACT and VIGOR evaluation): rank < R // 100, a floor,
    so R < 100 gives 0 %;
  "university1652" (University-1652's CMC[round(R * 0.01)]): rank < round(R * 0.01) + 1,
    Python's round (half to even) on the float product: R = 250 gives rank < 3.
- AP (University-1652): rank the references by (score descending, positives before
  non-positives of equal score — the same "strictly higher" rule as rank —, index ascending).
  Then the i-th positive (0-based) sits at r_i = i + n_i, where n_i is the number of
  non-positives scoring strictly higher than it; AP = mean over positives of
  ((i / r_i, or 1 when r_i = 0) + (i + 1) / (r_i + 1)) / 2. The value does not depend on
  the order of positives with equal scores. Computed under both protocols.
- hit rate (VIGOR, as its and Sample4Geo's evaluation code count it): % of queries for
  which no reference other than its positives and its semi-positives scores strictly higher
  than the best positive, i.e. rank minus the number of semi-positives scoring strictly
  higher than the best positive is 0. A semi-positive ranked first is not enough when a
  plain negative also beats the positive; a plain negative that only ties it does not
  count. Semi-positives of a query are the references whose label is among its
  semi-positive labels (-1 padding and repeated labels ignored; its own label marks
  positives, not semi-positives). VIGOR has one positive per query; with several, the
  best positive decides, as for rank.

Exactness. Every score that decides a rank, a hit or an AP term is the value its
(query, reference) cell took in the streamed block product (s4g.retrieval.scoring.score_blocks); none
is recomputed elsewhere, so a positive and the scores it is compared with come from one
product. (Differently shaped products may still round two distinct rows' scores that differ
by less than an ulp either way; exact ties and equal rows are decided the same way in every
chunking.) One
pass suffices although a positive's block score is not known before its block: each
positive's score is estimated first (its own dot product), and the float32 dot-product error
bound puts the block score inside a window around the estimate. Non-positives above the
window are counted on the spot; the rare ones inside a window are kept with their block
scores and compared with the positive's block score after the pass. On the CPU a block is
reduced in one read (s4g.sampling.count_above); torch's reductions, used on a GPU, count
only the block rows whose highest non-positive reaches a window of their query.
Duplicates. A product may give equal reference rows different last bits (MKL's single-row
path does, even within one call), so a non-positive equal to one of the query's positives
row for row (a "twin") takes, by rule, the lowest block score among the positives it equals:
it never counts above them, as an exact tie would not.
Rank and hit rate never disagree: the semi-positive cells are read from the very block of
scores the rank was counted from and compared with the same float32 value, so every query
of rank 0 is a hit and a semi-positive counted above the positive is also counted in its
rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from s4g import sampling
from s4g.errors import UserInputError
from s4g.retrieval.scoring import duplicate_groups, score_blocks
from s4g.runtime import pick_device

# (query rows, reference rows) per block. CPU: 2048×8192 float32 = 64 MB of scores (+128 MB
# of int64 bins with several positives), big enough for the matmul to run near peak.
# GPU: 4096×32768 = 512 MB of scores (+1 GiB of bins).
CPU_BLOCK = (2048, 8192)
GPU_BLOCK = (4096, 32768)
_FINITE_CHUNK = 1 << 22  # elements per finiteness check
_EST_CHUNK = 1 << 18  # elements per chunk of positive-estimate products
_DIRECT_MAX = 4  # up to this many positives per query: two compare-and-count passes each

Embeddings = npt.ArrayLike | torch.Tensor  # (N, D), numpy or torch
Pairs = tuple[np.ndarray, np.ndarray]  # (offsets (Q+1,), reference rows) per query
Cells = tuple[np.ndarray, np.ndarray, np.ndarray]


def as_embeddings(x: Embeddings, name: str, device: torch.device) -> torch.Tensor:
    """(N, D) float32 contiguous tensor on `device`; UserInputError for bad shape or NaN/inf."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise UserInputError(f"{name}: expected a non-empty (N, D) array, got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float32).contiguous()
    # A row holding NaN or ±inf has a non-finite sum, so one summing pass clears the common
    # case; only then (or when a large row overflows its sum) are the elements tested, in row
    # chunks: torch.isfinite allocates ~7 bytes of temporaries per element.
    if bool(torch.isfinite(t.sum(dim=1)).all()):
        return t
    step = max(1, _FINITE_CHUNK // t.shape[1])
    bad = torch.cat([~torch.isfinite(t[i : i + step]).all(dim=1) for i in range(0, t.shape[0], step)])
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise UserInputError(
            f"{name}: {int(bad.sum())} row(s) hold NaN or inf (first rows {rows}); "
            "the model or its checkpoint produced invalid embeddings"
        )
    return t


def _labels(x: npt.ArrayLike | torch.Tensor, n: int, name: str) -> np.ndarray:
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if a.shape != (n,):
        raise UserInputError(f"{name}: expected shape ({n},) to match the embeddings, got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise UserInputError(f"{name}: expected integer labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _rows_with_labels(labels: np.ndarray, reference_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(counts (N,), rows): the reference rows holding labels[i], ascending, are the i-th run
    of `rows`, counts[i] long (0 when no reference has that label)."""
    order = np.argsort(reference_labels, kind="stable")  # stable: each label's rows ascending
    sorted_labels = reference_labels[order]
    lo = np.searchsorted(sorted_labels, labels, side="left")
    counts = np.searchsorted(sorted_labels, labels, side="right") - lo
    # Gather every run without a Python loop over labels.
    starts = np.concatenate([[0], np.cumsum(counts)])
    within = np.arange(starts[-1], dtype=np.int64) - np.repeat(starts[:-1], counts)
    return counts, order[np.repeat(lo, counts) + within].astype(np.int64)


def positive_pairs(query_labels: np.ndarray, reference_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (Q+1,), ref_rows (sum P,)) int64: query q's positives are
    ref_rows[offsets[q]:offsets[q+1]], ascending. UserInputError names queries without positive."""
    counts, rows = _rows_with_labels(query_labels, reference_labels)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        raise UserInputError(
            f"{missing.size} of {query_labels.size} queries have no positive reference "
            f"(query rows {missing[:5].tolist()}, labels {query_labels[missing[:5]].tolist()}); "
            "every query label must occur among the reference labels"
        )
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), rows


def semi_positive_pairs(
    query_labels: np.ndarray, reference_labels: np.ndarray, semi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (Q+1,), ref_rows) int64: query q's semi-positives are
    ref_rows[offsets[q]:offsets[q+1]], the references whose label is among semi[q] (Q, S),
    without the -1 padding, repeated labels and q's own label (those are positives)."""
    n_q, n_s = semi.shape
    owner = np.repeat(np.arange(n_q, dtype=np.int64), n_s)
    labels = semi.reshape(-1).astype(np.int64)
    keep = (labels != -1) & (labels != np.repeat(query_labels, n_s))
    owner, labels = owner[keep], labels[keep]
    # (query, label) pairs sorted by query, each once: repeats within a row count once
    order = np.lexsort((labels, owner))
    owner, labels = owner[order], labels[order]
    first = np.ones(owner.size, dtype=bool)
    first[1:] = (owner[1:] != owner[:-1]) | (labels[1:] != labels[:-1])
    counts, rows = _rows_with_labels(labels[first], reference_labels)
    per_query = np.bincount(np.repeat(owner[first], counts), minlength=n_q)
    return np.concatenate([[0], np.cumsum(per_query)]).astype(np.int64), rows


def _guards(
    q: torch.Tensor, r: torch.Tensor, offsets: np.ndarray, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Bounds that each positive's block score is known to lie within, before the pass.

    -> (lo, hi) (Q, Pmax) float32, each query's positives in the order of their estimated
    score (ascending), padded on the right with +inf; slot (sum P,) int64: the column of
    pair i in lo/hi. The estimate is the pair's elementwise product, summed; the block
    product may sum in another order, so the bound is the float32 dot-product error bound
    2·γ_D·|q|·|r| (γ_D = D·u / (1 - D·u), u = 2^-24) on both sides, widened by one ulp.
    """
    n_q, dim = q.shape
    counts = np.diff(offsets)
    p_max = int(counts.max())
    dev = q.device
    owner = torch.from_numpy(np.repeat(np.arange(n_q), counts)).to(dev)
    ref_rows = torch.from_numpy(rows).to(dev)
    est = torch.empty(rows.size, device=dev)
    norms = torch.empty(rows.size, dtype=torch.float64, device=dev)
    step = max(1, _EST_CHUNK // dim)
    for s in range(0, rows.size, step):  # P × D work, in chunks that stay in cache
        e = min(rows.size, s + step)
        qa, ra = q[owner[s:e]], r[ref_rows[s:e]]
        est[s:e] = torch.linalg.vecdot(qa, ra)
        norms[s:e] = qa.norm(dim=1).double() * ra.norm(dim=1).double()
    u = 2.0**-24
    gamma = dim * u / (1 - dim * u)
    # (1 + 1e-3): the norms themselves are rounded; the absolute term covers underflow
    tol = (2 * gamma * (1 + 1e-3) * norms + 1e-37).float()
    lo = torch.nextafter(est - tol, torch.tensor(float("-inf"), device=dev))
    hi = torch.nextafter(est + tol, torch.tensor(float("inf"), device=dev))
    col = np.arange(rows.size) - np.repeat(offsets[:-1], counts)
    table = torch.full((n_q, p_max), float("inf"), device=dev)
    table[owner, torch.from_numpy(col).to(dev)] = est
    order = table.argsort(dim=1, stable=True)  # padding (+inf) stays last
    slot_of = torch.empty_like(order)
    slot_of.scatter_(1, order, torch.arange(p_max, device=dev).expand(n_q, p_max).contiguous())
    slot = slot_of[owner, torch.from_numpy(col).to(dev)].cpu().numpy()
    lo_t = torch.full((n_q, p_max), float("inf"), device=dev)
    hi_t = torch.full((n_q, p_max), float("inf"), device=dev)
    slot_t = torch.from_numpy(slot).to(dev)
    lo_t[owner, slot_t] = lo
    hi_t[owner, slot_t] = hi
    return lo_t, hi_t, slot


def _twin_pairs(
    positives: Pairs, query_labels: np.ndarray, reference_labels: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, reference row, positive pair) of every non-positive reference that equals one
    of the query's positives row for row: its "twin" pair is the first positive it equals."""
    offsets, rows = positives
    counts, twins = _rows_with_labels(groups[rows], groups)
    pair = np.repeat(np.arange(rows.size, dtype=np.int64), counts)
    owner = np.repeat(np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets)), counts)
    keep = reference_labels[twins] != query_labels[owner]
    owner, twins, pair = owner[keep], twins[keep], pair[keep]
    _, first = np.unique(np.stack([owner, twins]), axis=1, return_index=True)
    first = np.sort(first)
    return owner[first], twins[first], pair[first]


class _Accumulator:
    """Per-query counts gathered over the blocks of one pass.

    Before the pass each positive score is known only to lie in a window (lo, hi] around an
    estimate (_guards). Per block:
    c_hi[q, s] += non-positives scoring strictly above hi of q's positive slot s (they are
      above the positive whatever its block score);
    window cells (query, score): non-positives inside some positive's window of their query,
      kept to be compared with the positive's block score after the pass;
    pos_val[i]: block score of positive pair i, read before the positives are masked;
    semi_val[i]: block score of semi-positive pair i (-inf when it is a positive's twin);
    other[q], other_row[q]: score and row of q's highest-scoring non-positive (the lowest row
      among equal scores; -inf and -1 while none was seen).
    rust: each block reduced by s4g.sampling.count_above in one read. Otherwise torch counts
    with a float32 compare written into a float buffer and a float row sum (its integer row
    reductions are several times slower); block rows hold at most 2^24 entries, so the float
    sums are exact.
    """

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, n_pos: int, n_semi: int, rust: bool) -> None:
        n_q, p_max = lo.shape
        dev = lo.device
        self.lo, self.hi, self.p_max, self.rust = lo, hi, p_max, rust
        self.lo_min = lo.min(dim=1).values
        self.c_hi = torch.zeros((n_q, p_max), dtype=torch.int64, device=dev)
        self.flags: torch.Tensor | None = None
        self.window_q: list[torch.Tensor] = []
        self.window_v: list[torch.Tensor] = []
        self.pos_val = torch.full((n_pos,), float("nan"), device=dev)
        self.semi_val = torch.full((n_semi,), float("nan"), device=dev)
        self.other = torch.full((n_q,), float("-inf"), device=dev)
        self.other_row = torch.full((n_q,), -1, dtype=torch.int64, device=dev)
        if p_max > _DIRECT_MAX and not rust:
            # bins path: bin(s) = number of bounds strictly below s; s > hi_j <=> bin(s) >=
            # n_le(hi_j); s in (lo_j, hi_j] <=> n_le(lo_j) <= bin(s) < n_le(hi_j)
            self.bounds = torch.cat([lo, hi], dim=1).sort(dim=1).values.contiguous()
            n_le_hi = torch.searchsorted(self.bounds, hi.contiguous(), side="right")
            n_le_lo = torch.searchsorted(self.bounds, lo.contiguous(), side="right")
            self.n_le_hi = n_le_hi
            k = torch.arange(2 * p_max + 1, device=dev)
            inside = (k[None, None, :] >= n_le_lo[:, :, None]) & (k[None, None, :] < n_le_hi[:, :, None])
            self.in_window = inside.any(dim=1)  # (Q, 2 Pmax + 1)

    def add(self, scores: torch.Tensor, q0: int, r0: int) -> None:
        """scores: (bq, br) block of reference rows r0.. with positives and twins set to -inf."""
        bq = scores.shape[0]
        if self.rust:  # one pass over the block (s4g.sampling.count_above) instead of several
            q1 = q0 + bq
            above, val, col, w_row, w_val = (
                torch.from_numpy(a)
                for a in sampling.count_above(scores.numpy(), r0, self.lo[q0:q1].numpy(), self.hi[q0:q1].numpy())
            )
            self.c_hi[q0:q1] += above
            better = val > self.other[q0:q1]
            self.other[q0:q1] = torch.where(better, val, self.other[q0:q1])
            self.other_row[q0:q1] = torch.where(better, col, self.other_row[q0:q1])
            if w_row.numel():
                self.window_q.append(w_row + q0)
                self.window_v.append(w_val)
            return
        # argmax returns the first maximal column; strictly greater keeps an earlier block's
        # equal score: the lowest row wins ties
        col = scores.argmax(dim=1)
        val = scores.gather(1, col.unsqueeze(1)).squeeze(1)
        better = val > self.other[q0 : q0 + bq]
        self.other[q0 : q0 + bq] = torch.where(better, val, self.other[q0 : q0 + bq])
        self.other_row[q0 : q0 + bq] = torch.where(better, col + r0, self.other_row[q0 : q0 + bq])
        # a row whose highest non-positive is at most its lowest window bound adds nothing:
        # only the other rows are counted (in few large operations: small ones cost more in
        # thread hand-offs than in arithmetic)
        need = torch.nonzero(val > self.lo_min[q0 : q0 + bq]).flatten()
        if need.numel() == bq:
            self._count(scores, torch.arange(q0, q0 + bq, device=scores.device))
        elif need.numel():
            self._count(scores.index_select(0, need), need + q0)

    def _count(self, scores: torch.Tensor, qs: torch.Tensor) -> None:
        """scores: (n, br) rows of a block, of queries qs (n,): add their counts above hi and
        keep their window cells."""
        lo, hi = self.lo[qs], self.hi[qs]
        if self.p_max <= _DIRECT_MAX:
            if self.flags is None or self.flags.numel() < scores.numel():
                self.flags = torch.empty(scores.numel(), device=scores.device)
            flags = self.flags[: scores.numel()].view_as(scores)
            above = torch.empty((scores.shape[0], self.p_max), dtype=torch.int64, device=scores.device)
            windowed = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
            for j in range(self.p_max):  # +inf padding is never exceeded: adds 0
                above[:, j] = torch.gt(scores, hi[:, j : j + 1], out=flags).sum(dim=1)
                above_lo = torch.gt(scores, lo[:, j : j + 1], out=flags).sum(dim=1)
                windowed |= above_lo != above[:, j]
            self.c_hi.index_add_(0, qs, above)
            if bool(windowed.any()):  # rare: a score within rounding of a positive's
                rows = torch.nonzero(windowed).flatten()
                sub = scores[rows]
                mask = ((sub[:, None, :] > lo[rows, :, None]) & (sub[:, None, :] <= hi[rows, :, None])).any(dim=1)
                qi, ci = torch.nonzero(mask, as_tuple=True)
                self.window_q.append(qs[rows[qi]])
                self.window_v.append(sub[qi, ci])
        else:
            bounds = self.bounds[qs]
            n = scores.shape[0]
            n_bins = bounds.shape[1] + 1
            bins = torch.searchsorted(bounds, scores, side="left")
            flat = bins + torch.arange(n, device=scores.device).unsqueeze(1) * n_bins
            hist = torch.bincount(flat.view(-1), minlength=n * n_bins).view(n, n_bins)
            suffix = hist.flip(1).cumsum(1).flip(1)
            self.c_hi.index_add_(0, qs, suffix.gather(1, self.n_le_hi[qs]))
            in_window = self.in_window[qs]
            windowed = (hist * in_window).sum(dim=1) > 0
            if bool(windowed.any()):
                rows = torch.nonzero(windowed).flatten()
                mask = in_window[rows].gather(1, bins[rows])
                qi, ci = torch.nonzero(mask, as_tuple=True)
                self.window_q.append(qs[rows[qi]])
                self.window_v.append(scores[rows[qi], ci])


def _block_cells(pairs: Pairs, q0: int, q1: int) -> Cells:
    """(block-local query index, reference row, pair index) of the pairs of queries q0 .. q1-1."""
    offsets, rows = pairs
    counts = np.diff(offsets[q0 : q1 + 1])
    local = np.repeat(np.arange(q1 - q0, dtype=np.int64), counts)
    return local, rows[offsets[q0] : offsets[q1]], np.arange(offsets[q0], offsets[q1], dtype=np.int64)


def _cells_in(
    cells: Cells, r0: int, r1: int, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(rows, columns, pair index) tensors of the block cells in reference rows r0 .. r1-1, or None."""
    qi, rows, pair = cells
    inside = (rows >= r0) & (rows < r1)
    if not inside.any():
        return None
    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev)

    return put(qi[inside]), put(rows[inside] - r0), put(pair[inside])


def _stream(
    q: torch.Tensor, r: torch.Tensor, positives: Pairs, twins: Pairs, semis: Pairs | None, acc: _Accumulator,
    block: tuple[int, int],
) -> None:
    """positives, twins, semis: (offsets, rows) pairs per query (semis may be None)."""
    dev = q.device
    pos_cells = twin_cells = (np.empty(0, np.int64),) * 3
    semi_cells: Cells | None = None
    for q0, r0, scores in score_blocks(q, r, block):
        q1 = q0 + scores.shape[0]
        r1 = r0 + scores.shape[1]
        if r0 == 0:
            pos_cells, twin_cells = _block_cells(positives, q0, q1), _block_cells(twins, q0, q1)
            semi_cells = None if semis is None else _block_cells(semis, q0, q1)
        pos = _cells_in(pos_cells, r0, r1, dev)
        if pos is not None:  # every positive score is its cell of this block, then masked
            acc.pos_val[pos[2]] = scores[pos[0], pos[1]]
            scores[pos[0], pos[1]] = float("-inf")
        twin = _cells_in(twin_cells, r0, r1, dev)
        if twin is not None:  # scored as their positive after the pass
            scores[twin[0], twin[1]] = float("-inf")
        semi = None if semi_cells is None else _cells_in(semi_cells, r0, r1, dev)
        if semi is not None:
            acc.semi_val[semi[2]] = scores[semi[0], semi[1]]
        acc.add(scores, q0, r0)


def _resolve(
    acc: _Accumulator, positives: Pairs, slot: np.ndarray, twin_pair: np.ndarray, groups: np.ndarray,
    semis: Pairs | None, n_q: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """After the pass: per query the (Q, Pmax) table of non-positives strictly above each
    positive (positives ascending by block score), the best positive's pair index and the
    number of semi-positives strictly above it. A twin (a non-positive equal row for row to
    a positive) scores as the lowest of the query's positives it equals: never above them."""
    offsets, rows = positives
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(n_q, dtype=np.int64), counts)
    p = acc.pos_val.cpu().numpy()
    lo, hi = acc.lo.cpu().numpy(), acc.hi.cpu().numpy()
    if np.isnan(p).any() or (p < lo[owner, slot]).any() or (p > hi[owner, slot]).any():
        raise RuntimeError("a positive's block score left the window its estimate bounds it to")
    above = acc.c_hi.cpu().numpy()[owner, slot]
    if acc.window_q:
        wq = torch.cat(acc.window_q).cpu().numpy()
        wv = torch.cat(acc.window_v).cpu().numpy()
        order = np.lexsort((wv, wq))
        wq, wv = wq[order], wv[order]
        starts = np.searchsorted(wq, np.arange(n_q + 1))
        for qq in np.unique(wq):
            mine = np.arange(offsets[qq], offsets[qq + 1])
            seg = wv[starts[qq] : starts[qq + 1]]
            above[mine] += np.searchsorted(seg, hi[qq, slot[mine]], "right") - np.searchsorted(seg, p[mine], "right")
    if twin_pair.size:
        key = owner * (int(groups.max()) + 1) + groups[rows]
        uniq, inverse = np.unique(key, return_inverse=True)
        low = np.full(uniq.size, np.inf, dtype=np.float32)
        np.minimum.at(low, inverse, p)
        twin_val = low[inverse[twin_pair]]
        t_owner = owner[twin_pair]
        for qq in np.unique(t_owner):
            vals = np.sort(twin_val[t_owner == qq])
            mine = np.arange(offsets[qq], offsets[qq + 1])
            above[mine] += vals.size - np.searchsorted(vals, p[mine], "right")
    order = np.lexsort((p, owner))  # per query ascending by block score
    col = np.arange(rows.size) - np.repeat(offsets[:-1], counts)
    table = np.zeros((n_q, int(counts.max())), dtype=np.int64)
    table[owner, col] = above[order]
    best = order[offsets[1:] - 1]
    semi_above = None
    if semis is not None:
        s_owner = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(semis[0]))
        sv = acc.semi_val.cpu().numpy()
        semi_above = np.bincount(s_owner[sv > p[best][s_owner]], minlength=n_q)
    return table, best, p, semi_above


PROTOCOLS = ("sample4geo", "university1652")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise UserInputError(
            f"protocol: expected one of {', '.join(repr(p) for p in PROTOCOLS)}, got {protocol!r}"
        )


def one_percent_k(n_ref: int, protocol: str = "sample4geo") -> int:
    """R@1% counts the queries of rank < this k, for n_ref references: n_ref // 100 under
    "sample4geo", round(n_ref * 0.01) + 1 under "university1652" (its CMC[round(R * 0.01)])."""
    _check_protocol(protocol)
    return n_ref // 100 if protocol == "sample4geo" else round(n_ref * 0.01) + 1


@dataclass(frozen=True)
class Retrieval:
    """One streamed evaluation: the metrics and, per query, what they were counted from.

    metrics: as retrieval_metrics returns them (percent).
    rank: (Q,) int64, the number of non-positives scoring strictly higher than the query's
      best positive (0 = found first; R@k is the share of rank < k).
    best_positive: (Q,) int64 reference row of that best positive (the highest-scoring
      positive; among positives of equal score, any one of them).
    best_positive_score: (Q,) float32, its score.
    top1: (Q,) int64 reference row the query retrieves first under the same rule: its best
      positive when rank is 0 (a non-positive that only ties it does not come first), else its
      highest-scoring non-positive (the lowest row among equal scores).
    """

    metrics: dict[str, float]
    rank: np.ndarray
    best_positive: np.ndarray
    best_positive_score: np.ndarray
    top1: np.ndarray


def retrieval_metrics(*args: Any, **kwargs: Any) -> dict[str, float]:
    """The metrics of evaluate_retrieval (same arguments): {"R@k", "R@1%", "AP"[, "hit_rate"]}
    in percent."""
    return evaluate_retrieval(*args, **kwargs).metrics


def evaluate_retrieval(
    query: Embeddings,
    reference: Embeddings,
    query_labels: npt.ArrayLike | torch.Tensor,
    reference_labels: npt.ArrayLike | torch.Tensor,
    semi_positives: npt.ArrayLike | torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    protocol: str = "sample4geo",
    device: str | torch.device | None = None,
    block: tuple[int, int] | None = None,
    method: str = "auto",
) -> Retrieval:
    """Retrieval metrics of query embeddings against reference embeddings, and each query's rank.

    query (Q, D), reference (R, D): float embeddings (numpy or torch), scored by dot product.
    query_labels (Q,), reference_labels (R,): integer labels; a reference is a positive of a
      query when their labels are equal. Every query needs at least one positive; references
      with labels no query has are distractors.
    semi_positives: (Q, S) integer labels of each query's semi-positive references, padded
      with -1 (VIGOR), or None. Repeats and the query's own label are ignored; a label no
      reference has marks nothing.
    ks: the k of the R@k entries (rank < k under both protocols).
    protocol: whose R@1% to report: "sample4geo" (rank < R // 100: CVUSA, CVACT, VIGOR) or
      "university1652" (rank < round(R * 0.01) + 1).
    device: where the matmuls run (default cuda if available).
    block: (query rows, reference rows) per score block (default CPU_BLOCK / GPU_BLOCK).
      Extra memory ~ 4 bytes per block cell (the scores; torch's reductions add ~8, 16 with
      more than 4 positives per query) plus O(Q × (max positives + semi-positives) per query).
    method: how a block is reduced: "auto" (Rust's one pass on the CPU, torch on a GPU),
      "torch", or "rust" (CPU only). Both give identical results.
    -> Retrieval: .metrics {"R@k" for k in ks, "R@1%", "AP"} (+ "hit_rate" when
       semi_positives is given), floats in percent; .rank, .best_positive (Q,) per query.
       rank, AP and hit rate use the best positive of a query (the one with the highest
       score) where it has several. Definitions and tie rules: module docstring.
    Raises UserInputError (a ValueError) for bad shapes, NaN/inf embeddings, queries without
    a positive, an unknown protocol.
    """
    _check_protocol(protocol)
    dev = pick_device(None if device is None else str(device))
    if method not in ("auto", "torch", "rust"):
        raise UserInputError(f"method must be auto, torch or rust, got {method!r}")
    if method == "rust" and dev.type != "cpu":
        raise UserInputError("method='rust' runs on the CPU only; pass device='cpu'")
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

    positives = positive_pairs(ql, rl)
    semis = None if semi is None else semi_positive_pairs(ql, rl, semi)
    n_q = q.shape[0]
    with torch.inference_mode():
        groups = duplicate_groups(r)
        t_owner, t_rows, twin_pair = _twin_pairs(positives, ql, rl, groups)
        twins = (np.concatenate([[0], np.cumsum(np.bincount(t_owner, minlength=n_q))]).astype(np.int64), t_rows)
        lo, hi, slot = _guards(q, r, *positives)
        acc = _Accumulator(lo, hi, positives[1].size, 0 if semis is None else semis[1].size,
                           rust=method == "rust" or (method == "auto" and dev.type == "cpu"))
        _stream(q, r, positives, twins, semis, acc, block)
        other_row = acc.other_row.cpu().numpy()
        above, best, pos_val, semi_above = _resolve(acc, positives, slot, twin_pair, groups, semis, n_q)
    counts = np.diff(positives[0])
    rank = above[np.arange(n_q), counts - 1]  # best positive = largest = index P_q - 1
    best_row, best_score = positives[1][best], pos_val[best]
    metrics = _summarise(above, rank, counts, one_percent_k(r.shape[0], protocol), ks, semi_above)
    return Retrieval(metrics, rank, best_row, best_score, np.where(rank == 0, best_row, other_row))


def _summarise(
    n_above: np.ndarray, rank: np.ndarray, counts: np.ndarray, one_pct_k: int, ks: Sequence[int],
    semi_above: np.ndarray | None,
) -> dict[str, float]:
    # n_above[q, j] = non-positives strictly above the j-th smallest positive score.
    n_q, p_max = n_above.shape
    out: dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = 100.0 * float(np.mean(rank < k))
    out["R@1%"] = 100.0 * float(np.mean(rank < one_pct_k))
    # i-th positive in ranking order (descending) = column P_q - 1 - i of the ascending table.
    i = np.arange(p_max)[None, :]
    valid = i < counts[:, None]
    cols = np.clip(counts[:, None] - 1 - i, 0, p_max - 1)
    r_i = i + np.take_along_axis(n_above, cols, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec_before = np.where(r_i == 0, 1.0, i / np.maximum(r_i, 1))
    terms = np.where(valid, (prec_before + (i + 1) / (r_i + 1)) / 2.0, 0.0)
    out["AP"] = 100.0 * float(np.mean(terms.sum(axis=1) / counts))
    if semi_above is not None:
        # semi-positives above the best positive are among the non-positives its rank counts
        assert (semi_above <= rank).all(), "semi-positive count exceeds the rank"
        out["hit_rate"] = 100.0 * float(np.mean(rank == semi_above))
    return out


__all__ = [
    "CPU_BLOCK",
    "GPU_BLOCK",
    "PROTOCOLS",
    "Retrieval",
    "as_embeddings",
    "evaluate_retrieval",
    "one_percent_k",
    "positive_pairs",
    "retrieval_metrics",
    "semi_positive_pairs",
]
