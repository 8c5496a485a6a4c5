"""Type stubs for the Rust extension s4g._sampler (built from rust_sampler/ by maturin).

Call it through s4g.sampling, which converts and checks arguments first. Every function
releases the GIL while it computes and raises ValueError for bad values.
"""

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M: float
MAX_FAILED_POPS: int
# The git commit the extension was built from; empty when built outside a checkout.
GIT_COMMIT: str

def gps_neighbours(
    lat_deg: npt.NDArray[np.float64], lon_deg: npt.NDArray[np.float64], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """(N,) C-contiguous degrees -> idx (N, k) int64, dist_m (N, k) float64 (exact, haversine)."""

def pack_batches(
    pair_class: npt.NDArray[np.int64],
    neighbours: npt.NDArray[np.int64] | None,
    batch_size: int,
    neighbour_select: int,
    max_failed_pops: int,
    seed: int,
    neighbour_range: int | None = None,
) -> tuple[npt.NDArray[np.int64], int, int]:
    """-> (batches (n_batches, batch_size) int64, dropped pairs, pairs placed via neighbours)."""

def topk_merge(
    scores: npt.NDArray[np.float32],
    col_offset: int,
    k: int,
    exclude: npt.NDArray[np.int64],
    best_idx: npt.NDArray[np.int64],
    best_val: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Merge a (q, r) score block into the running (q, k) top-k; rows by (score desc, index asc)."""

def count_above(
    scores: npt.NDArray[np.float32],
    col_offset: int,
    lo: npt.NDArray[np.float32],
    hi: npt.NDArray[np.float32],
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
]:
    """Per row of a (q, r) block: scores above each hi, the highest score and its column, the
    scores inside a window (lo, hi]."""
