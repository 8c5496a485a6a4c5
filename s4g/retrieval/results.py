"""Per-query results of an evaluation: each query's rank, its top-k references and how far
its top-1 reference lies from where it was taken; their summary; the per-query CSV.

Reads embeddings, file names and positions, never an image. The ranks and each query's
top-1 reference are the very ones the metrics were counted from (s4g.retrieval.evaluate.evaluate_retrieval,
one streamed pass); the top-k lists of the per-query CSV and the pictures, computed only when
asked for, come from s4g.retrieval.mining.similar_references, ordered by score descending, equal scores
by lower row. The two differ only on exact ties: a non-positive that ties the best positive
does not count in its rank but can be listed before it.

Localisation error: the great-circle distance (s4g.geo.haversine_m) from the query's true
position to the centre of its top-1 reference, wherever the set knows both (CVUSA, CVACT,
VIGOR, csv, synthetic); VIGOR's panoramas lie off their tile's centre, so even a correct
top-1 has an error there.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
import torch

from s4g.data.records import EvalSet
from s4g.fileio import atomic_path, csv_kind
from s4g.geo import haversine_m
from s4g.retrieval.evaluate import evaluate_retrieval
from s4g.retrieval.mining import similar_references

TOP_K = 5  # references listed per query (the figures of the field show the top 5)
WITHIN_M = (25, 50, 100, 1000)  # the error thresholds reported, metres
_SCORE_CHUNK = 4096  # queries per batch of top-k score gathers


@dataclass(frozen=True)
class SplitResults:
    """An evaluation of a split: its metrics and, per query, what they came from.

    metrics: retrieval metrics in percent (s4g.retrieval.evaluate), plus error_summary's entries when
      positions are known.
    rank: (Q,) int64 number of non-positives scoring strictly above the best positive.
    true_reference: (Q,) int64 row of the best positive; true_score: (Q,) float32 its score.
    top1: (Q,) int64 reference row retrieved first (the best positive when rank is 0).
    error_m: (Q,) float64 metres from the query's position to its top-1 reference's centre
      (NaN where either is unknown), or None when the set has no positions.
    top: (Q, k) int64 reference rows, most similar first; top_scores: (Q, k) float32; both
      None unless asked for (split_results' k).
    """

    metrics: dict[str, float]
    rank: np.ndarray
    true_reference: np.ndarray
    true_score: np.ndarray
    top1: np.ndarray
    error_m: np.ndarray | None
    top: np.ndarray | None = None
    top_scores: np.ndarray | None = None


def top_references(query: np.ndarray, reference: np.ndarray, k: int = TOP_K, *,
                   device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows (Q, k'), scores (Q, k')): each query's k' = min(k, R - 1) most similar reference
    rows (all R = 1 of them when there is one), most similar first, and their dot products.

    query (Q, D), reference (R, D) float32 embeddings.
    """
    n_q, n_ref = query.shape[0], reference.shape[0]
    k = min(int(k), n_ref - 1)
    if k < 1:
        rows = np.zeros((n_q, 1), dtype=np.int64)
    else:
        rows = similar_references(query, reference, k, np.full(n_q, -1, dtype=np.int64), device=device)
    scores = np.empty(rows.shape, dtype=np.float32)
    for s in range(0, n_q, _SCORE_CHUNK):
        e = min(n_q, s + _SCORE_CHUNK)
        scores[s:e] = np.einsum("qd,qkd->qk", query[s:e], reference[rows[s:e]])
    return rows, scores


def localisation_error_m(eval_set: EvalSet, top1: np.ndarray) -> np.ndarray | None:
    """(Q,) float64 metres from each query's position to the centre of reference top1[q]
    (NaN where either position is unknown), or None when the set has no positions."""
    ev = eval_set
    if ev.query_lat is None or ev.query_lon is None or ev.reference_lat is None or ev.reference_lon is None:
        return None
    return haversine_m(ev.query_lat, ev.query_lon, ev.reference_lat[top1], ev.reference_lon[top1])


def within_key(metres: int) -> str:
    """The metrics key of the share of queries within `metres`: within_25m, within_1km."""
    return f"within_{metres // 1000}km" if metres % 1000 == 0 else f"within_{metres}m"


def error_summary(error_m: np.ndarray | None) -> dict[str, float]:
    """{"error_median_m", "error_mean_m" (metres), within_key(m) for m in WITHIN_M (percent of
    the queries with a known error)}; {} when no error is known."""
    if error_m is None:
        return {}
    known = error_m[np.isfinite(error_m)]
    if known.size == 0:
        return {}
    out = {"error_median_m": float(np.median(known)), "error_mean_m": float(np.mean(known))}
    for m in WITHIN_M:
        out[within_key(m)] = 100.0 * float(np.mean(known <= m))
    return out


def split_results(query: np.ndarray, reference: np.ndarray, eval_set: EvalSet, *, protocol: str,
                  k: int = 0, device: str | torch.device | None = None) -> SplitResults:
    """Metrics and per-query results of (Q, D) query and (R, D) reference embeddings of
    `eval_set`, counted as `protocol` counts them (s4g.retrieval.evaluate). k > 0 also lists each
    query's top-k references (a second pass over the scores, for the CSV and pictures)."""
    ev = eval_set
    retrieval = evaluate_retrieval(query, reference, ev.query_labels, ev.reference_labels,
                                   semi_positives=ev.semi_positives, protocol=protocol, device=device)
    error = localisation_error_m(ev, retrieval.top1)
    top, top_scores = top_references(query, reference, k, device=device) if k > 0 else (None, None)
    return SplitResults({**retrieval.metrics, **error_summary(error)}, retrieval.rank, retrieval.best_positive,
                        retrieval.best_positive_score, retrieval.top1, error, top, top_scores)


def _shown_path(path: str, root: str | os.PathLike | None) -> str:
    if root is None:
        return path
    rel = os.path.relpath(path, root)
    return path if rel.startswith(os.pardir) else rel


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else ""


#: The kind of file `s4g eval --per-query` writes (s4g.fileio.check_output).
PER_QUERY_FILE = csv_kind("an s4g per-query CSV", lambda names: names == per_query_header((len(names) - 7) // 2))


def per_query_header(k: int) -> list[str]:
    """The columns of the per-query CSV for k listed references."""
    tops = [f"top{i}_{what}" for i in range(1, k + 1) for what in ("reference", "score")]
    return ["query", "true_reference", "rank", "true_score", *tops, "error_m", "query_lat", "query_lon"]


def write_per_query_csv(path: str | os.PathLike, eval_set: EvalSet, results: SplitResults,
                        root: str | os.PathLike | None = None) -> None:
    """One row per query (columns: per_query_header): files relative to `root` (when under
    it), rank as counted by the metrics (0 = found first), scores, error in metres and the
    query's position in degrees (empty where unknown). Written atomically. `results` must
    hold the top-k lists (split_results with k > 0)."""
    if results.top is None or results.top_scores is None:
        raise ValueError("write_per_query_csv needs results with top-k lists (split_results(..., k > 0))")
    ev = eval_set
    n_q, k = results.top.shape
    lat = np.full(n_q, np.nan) if ev.query_lat is None else ev.query_lat
    lon = np.full(n_q, np.nan) if ev.query_lon is None else ev.query_lon
    error = np.full(n_q, np.nan) if results.error_m is None else results.error_m
    refs = [_shown_path(f, root) for f in ev.reference_files]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(per_query_header(k))
        for q in range(n_q):
            tops = [v for row, score in zip(results.top[q], results.top_scores[q])
                    for v in (refs[row], _number(score, 6))]
            out.writerow([_shown_path(ev.query_files[q], root), refs[results.true_reference[q]],
                          int(results.rank[q]), _number(results.true_score[q], 6), *tops,
                          _number(error[q], 2), _number(lat[q], 7), _number(lon[q], 7)])


def pick_examples(rank: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Query rows for a picture: half successes (rank 0) and half failures, drawn with `seed`
    (a group short of its half is topped up from the other); successes first, each group
    in query order. -> (min(count, Q),) int64."""
    rng = np.random.default_rng(seed)
    ok, bad = np.flatnonzero(rank == 0), np.flatnonzero(rank > 0)
    count = min(int(count), rank.size)
    n_bad = min(bad.size, max(count // 2, count - ok.size))
    n_ok = count - n_bad
    picked_ok = np.sort(rng.choice(ok, n_ok, replace=False)) if n_ok else ok[:0]
    picked_bad = np.sort(rng.choice(bad, n_bad, replace=False)) if n_bad else bad[:0]
    return np.concatenate([picked_ok, picked_bad]).astype(np.int64)


__all__ = [
    "TOP_K", "WITHIN_M", "SplitResults", "error_summary", "localisation_error_m", "per_query_header",
    "pick_examples", "split_results", "top_references", "within_key", "write_per_query_csv",
]
