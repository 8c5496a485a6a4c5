"""Distances on the Earth in metres: one radius, one haversine."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Mean Earth radius in metres used for every distance; rust_sampler/src/geo.rs holds the same
#: number for the Rust side (a test compares the two).
EARTH_RADIUS_M: float = 6_371_008.8


def haversine_m(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (numpy broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    dist: np.ndarray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return dist


def nearest_spacing_m(lat: np.ndarray, lon: np.ndarray) -> float | None:
    """Median distance in metres from a point to its nearest other point; None when fewer
    than two points have coordinates (NaN = unknown)."""
    # The k-NN is the compiled extension's: imported here, so that loading geo does not load it.
    from s4g.sampling import gps_neighbours

    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.sum() < 2:
        return None
    _, dist = gps_neighbours(lat[ok], lon[ok], 1)
    return float(np.median(dist[:, 0]))


__all__ = ["EARTH_RADIUS_M", "haversine_m", "nearest_spacing_m"]
