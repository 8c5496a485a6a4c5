"""The neighbour lists the released Sample4Geo code builds, for `--lists released`.

s4g's own lists stay the default (`--lists s4g`); these reproduce, on the same data, what the
released scripts would have handed to their batch sampler:

- GPS lists (`calc_distance_*.py`): scikit-learn's haversine metric applied to (lat, lon)
  in degrees, although it expects radians; the diagonal of the distance matrix filled with
  the matrix's maximum; each row's k smallest by `torch.topk(largest=False)`, whose order
  among equal distances this keeps. Computed one block of rows at a time (the same values
  and order as the whole matrix at once, without its N×N memory). Needs scikit-learn (the
  `released` extra): its metric is the released arithmetic, bit for bit.
- Mined lists (VIGOR's `calculate_nearest`): a class is scored by the embedding of its
  *last* training query in pair order (a dict overwritten per query), not by the
  normalised mean of its queries.
- Cutting a list to `neighbour_range`: after the classes an anchor pulled in were removed
  from its list, not before (s4g.sampling.pack_batches' `neighbour_range`).
"""

from __future__ import annotations

import numpy as np
import torch

from s4g.errors import UserInputError
from s4g.flags import Flag

LISTS = ("s4g", "released")
_ROWS = 2048  # distance rows per block: 2048 × N float64


def check_lists(lists: str) -> str:
    """`lists` if it is one of LISTS; UserInputError naming --lists otherwise."""
    if lists not in LISTS:
        raise UserInputError(f"{Flag.LISTS}: expected one of {', '.join(LISTS)}, got {lists!r}")
    return lists


def _haversine_metric():
    try:
        from sklearn.metrics import DistanceMetric
    except ImportError:
        raise UserInputError(
            f"{Flag.LISTS} released needs scikit-learn, whose haversine metric the released GPS lists "
            "were computed with: pip install 's4g[released]'"
        ) from None
    return DistanceMetric.get_metric("haversine")


def released_gps_neighbours(lat_deg, lon_deg, k: int) -> np.ndarray:
    """(N, k) int64 rows of each point's k "nearest" points as the released scripts rank them.

    lat_deg, lon_deg: (N,) degrees (fed to the radians formula as they are, as released);
    1 <= k < N. Row i may hold i itself only where the released code would have (the
    diagonal carries the largest distance, which ties the farthest points).
    """
    x = np.column_stack([np.asarray(lat_deg, dtype=np.float64), np.asarray(lon_deg, dtype=np.float64)])
    n = x.shape[0]
    if not 1 <= k < n:
        raise UserInputError(f"k must be between 1 and {n - 1} (the number of points less one), got {k}")
    metric = _haversine_metric()
    blocks = range(0, n, _ROWS)
    far = max(float(metric.pairwise(x[s : s + _ROWS], x).max()) for s in blocks)
    out = np.empty((n, k), dtype=np.int64)
    for s in blocks:
        dm = torch.from_numpy(metric.pairwise(x[s : s + _ROWS], x))
        rows = torch.arange(dm.shape[0])
        dm[rows, rows + s] = far
        out[s : s + dm.shape[0]] = torch.topk(dm, k=k, dim=1, largest=False).indices.numpy()
    return out


def last_query_embeddings(query_emb: np.ndarray, pair_class: np.ndarray, reference_emb: np.ndarray) -> np.ndarray:
    """(C, D) float32: per class, the embedding of its last pair's query (pair order); a
    class without a pair keeps its own reference embedding (it never anchors)."""
    out = np.array(reference_emb, dtype=np.float32, copy=True)
    pair_class = np.asarray(pair_class, dtype=np.int64)
    # the last occurrence of each class: first occurrence in the reversed order
    classes, first_rev = np.unique(pair_class[::-1], return_index=True)
    out[classes] = query_emb[pair_class.size - 1 - first_rev]
    return out


__all__ = ["LISTS", "check_lists", "last_query_embeddings", "released_gps_neighbours"]
