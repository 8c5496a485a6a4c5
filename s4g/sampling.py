"""Hard-negative sampling: the typed, checked Python face of the Rust extension s4g._sampler.

Every function converts its arguments to contiguous arrays of one fixed dtype (float64
degrees, int64 indices, float32 scores) and raises `s4g.errors.UserInputError` (a ValueError)
naming the argument. Each check lives once at the boundary: here what Rust cannot see or
word (conversion, number of dimensions, integer scalars, which pyo3 would refuse with a
TypeError or OverflowError without the argument's name, and the shape of the running
top-k); in Rust the checks of lengths and values, which guard its memory and whose
ValueError `_call` turns into UserInputError. Rust releases the GIL while it computes
(rayon threads: RAYON_NUM_THREADS); arrays passed in must not be modified by other threads
during a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

from s4g import _sampler
from s4g.errors import UserInputError
from s4g.geo import EARTH_RADIUS_M

__all__ = [
    "EARTH_RADIUS_M",
    "MAX_FAILED_POPS",
    "PackStats",
    "count_above",
    "gps_neighbours",
    "pack_batches",
    "topk_init",
    "topk_merge",
]

#: Packing gives up after this many consecutive pops that add no pair (as the reference does).
MAX_FAILED_POPS: int = _sampler.MAX_FAILED_POPS


class PackStats(TypedDict):
    """Counts from one packing: pairs left out, and pairs placed via a neighbour list."""

    dropped: int
    via_neighbour: int


def _array(x: npt.ArrayLike, dtype: npt.DTypeLike, name: str, ndim: int) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{name} must be convertible to {np.dtype(dtype).name}: {err}") from None
    if arr.ndim != ndim:
        raise UserInputError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    return arr


def _index_array(x: npt.ArrayLike, name: str, ndim: int) -> np.ndarray:
    """An int64 array; float input is accepted only when every value is integral."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise UserInputError(f"{name} must hold integers, got non-integral values")
    if arr.dtype.kind not in "iuf" and arr.size:
        raise UserInputError(f"{name} must hold integers, got dtype {arr.dtype}")
    return _array(arr, np.int64, name, ndim)


def _integer(value: object, name: str) -> int:
    """An integer argument (bools and non-integers are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserInputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _count(value: object, name: str, minimum: int) -> int:
    """An integer argument >= minimum. Rust takes these as usize, so a negative one must stop
    here; the minimum is checked here too, so that one message covers every bad value (Rust's
    own check of it guards its API)."""
    value = _integer(value, name)
    if value < minimum:
        raise UserInputError(f"{name} must be at least {minimum}, got {value}")
    return value


_R = TypeVar("_R")


def _call(fn: Callable[..., _R], *args: object) -> _R:
    """Run a Rust function, turning its ValueError into UserInputError (the one place)."""
    try:
        return fn(*args)
    except ValueError as err:
        raise UserInputError(str(err)) from None


def gps_neighbours(lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest *other* points of every point by great-circle (haversine) distance.

    Args:
        lat_deg, lon_deg: (N,) latitudes in [-90, 90] and longitudes in [-180, 180], degrees
            (converted to float64).
        k: neighbours per point, 1 <= k < N.

    Returns:
        idx: (N, k) int64, row i = the k nearest points other than i, nearest first,
            equal distances ordered by lower index.
        dist_m: (N, k) float64 haversine distances in metres (radius EARTH_RADIUS_M).

    A k-d tree over unit vectors, queried in parallel; memory O(N·k), never N×N.
    """
    lat = _array(lat_deg, np.float64, "lat_deg", 1)
    lon = _array(lon_deg, np.float64, "lon_deg", 1)
    return _call(_sampler.gps_neighbours, lat, lon, _count(k, "k", 1))


def pack_batches(
    pair_class: npt.ArrayLike,
    neighbours: npt.ArrayLike | None,
    batch_size: int,
    neighbour_select: int = 64,
    seed: int = 0,
    *,
    max_failed_pops: int = MAX_FAILED_POPS,
    return_stats: bool = False,
    neighbour_range: int | None = None,
) -> np.ndarray | tuple[np.ndarray, PackStats]:
    """Greedy hard-negative batch packing for one epoch, Sample4Geo's rule, seeded.

    The rule (queue, anchors, the neighbour list's fixed and random halves, the walk's end) and
    its random draws are described once, in rust_sampler/src/pack.rs, where it is implemented.

    Args:
        pair_class: (P,) int64 class of each training pair, in [0, C).
        neighbours: (C, K) int64, row c = classes hardest for c first, -1 = padding; or None
            for class-unique random batches. When given, C is its number of rows (it must
            cover every class id); otherwise C = max(pair_class) + 1. The whole row is the
            list unless neighbour_range is given.
        batch_size: pairs per batch, 2 <= batch_size <= number of classes with pairs.
        neighbour_select: neighbour classes tried per anchor (half fixed, half random).
        seed: any integer; the same inputs and seed give the same batches on any machine
            and thread count (the packing is sequential).
        max_failed_pops: the walk's patience; the reference's CVUSA/CVACT/VIGOR loops give up
            after MAX_FAILED_POPS (1024) failures in a row, its University-1652 loop after 512.
        return_stats: also return PackStats.
        neighbour_range: None (s4g: the caller slices each row to its range first, so the
            classes an anchor pulled in shorten its list), or an int >= 1 (the released
            code's order): an anchor draws from the first neighbour_range entries of its list
            as it stands, after its earlier pulls were removed, so later entries move up.

    Returns:
        (n_batches, batch_size) int64 pair indices in the order they were added (anchor,
        then what it pulled in): every pair at most once, never two pairs of one class in a
        batch, full batches only.
    """
    classes = _index_array(pair_class, "pair_class", 1)
    nb = None if neighbours is None else _index_array(neighbours, "neighbours", 2)
    batch_size = _count(batch_size, "batch_size", 2)
    neighbour_select = _count(neighbour_select, "neighbour_select", 0)
    seed = _count(seed, "seed", -(2**63)) & (2**64 - 1)
    max_failed_pops = _count(max_failed_pops, "max_failed_pops", 1)
    if neighbour_range is not None:
        neighbour_range = _count(neighbour_range, "neighbour_range", 1)
    batches, dropped, via = _call(_sampler.pack_batches, classes, nb, batch_size, neighbour_select,
                                  max_failed_pops, seed, neighbour_range)
    if return_stats:
        return batches, PackStats(dropped=dropped, via_neighbour=via)
    return batches


def topk_init(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty running top-k for q rows: idx (q, k) int64 all -1, val (q, k) float32 all -inf."""
    q, k = _count(q, "q", 0), _count(k, "k", 1)
    return np.full((q, k), -1, dtype=np.int64), np.full((q, k), -np.inf, dtype=np.float32)


def topk_merge(
    scores: npt.ArrayLike,
    col_offset: int,
    k: int,
    exclude: npt.ArrayLike,
    best_idx: npt.ArrayLike,
    best_val: npt.ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a block of scores into each row's running top-k (for blocked mining).

    Args:
        scores: (q, r) float32 block, columns = global columns col_offset .. col_offset+r-1.
            NaN is an error; ±inf are ordinary scores. Blocks merged into one running top-k
            must not overlap.
        col_offset: global index of the block's first column (>= 0).
        k: entries kept per row.
        exclude: (q,) int64 global column to skip per row, -1 = none.
        best_idx, best_val: (q, k) int64 / float32 running top-k (start from topk_init).

    The merge runs without the GIL and reads the arrays in place: no other thread may write
    to them until it returns.

    Returns:
        new_idx (q, k) int64, new_val (q, k) float32, each row ordered by score descending,
        then global index ascending; unfilled entries are -1 / -inf at the end. Equal to a
        stable dense argsort of -scores over all blocks seen so far.
    """
    s = _array(scores, np.float32, "scores", 2)
    ex = _index_array(exclude, "exclude", 1)
    bi = _index_array(best_idx, "best_idx", 2)
    bv = _array(best_val, np.float32, "best_val", 2)
    k = _count(k, "k", 1)
    # Rust sees the running top-k as flat buffers and checks their lengths (q * k): the
    # width k, which turns a length into a shape, can only be checked here
    if bi.shape[1] != k or bv.shape != bi.shape:
        raise UserInputError(
            f"best_idx and best_val must have shape ({s.shape[0]}, {k}), got {bi.shape} and {bv.shape}"
        )
    return _call(_sampler.topk_merge, s, _integer(col_offset, "col_offset"), k, ex, bi, bv)


def count_above(
    scores: npt.ArrayLike, col_offset: int, lo: npt.ArrayLike, hi: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over a block of scores for streamed retrieval metrics.

    Args:
        scores: (q, r) float32 block, columns = global columns col_offset .. col_offset+r-1.
        lo, hi: (q, s) float32 windows (lo, hi] per row and slot; +inf in both = no window.

    The pass runs without the GIL and reads the arrays in place: no other thread may write
    to them until it returns.

    Returns:
        above (q, s) int64: scores strictly above hi[i, j]; best_val (q,) float32 and
        best_col (q,) int64: each row's highest score and its lowest global column (-inf and
        -1 when none beats -inf); window_row (n,) int64 and window_val (n,) float32: the
        scores inside some window of their row (lo < score <= hi), rows ascending.
    """
    s = _array(scores, np.float32, "scores", 2)
    lo, hi = _array(lo, np.float32, "lo", 2), _array(hi, np.float32, "hi", 2)
    return _call(_sampler.count_above, s, _integer(col_offset, "col_offset"), lo, hi)
