"""Inverse UTM (transverse Mercator on WGS84): grid metres -> latitude/longitude degrees.

Used for CVACT, whose GPS table is UTM zone 55 south (Canberra). The formula is Krüger's
series as given by Karney (2011, "Transverse Mercator with an accuracy of a few
nanometers", J. Geodesy 85:475), truncated at fourth order in the third flattening n: the
first neglected terms are O(n^5) ~ 1e-14 rad, far below a millimetre inside a zone (checked
against PROJ at Canberra to 1e-10 degrees in tests/test_loaders.py).
Steps: grid -> normalised (xi, eta) -> conformal coordinates (xi', eta') via the beta series
-> conformal latitude chi -> geodetic latitude via the delta series; longitude from
atan2(sinh eta', cos xi') around the zone's central meridian.
"""

from __future__ import annotations

import numpy as np

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
K0 = 0.9996
FALSE_EASTING = 500_000.0
FALSE_NORTHING_SOUTH = 10_000_000.0


def utm_to_latlon(
    easting: np.ndarray, northing: np.ndarray, zone: int, south: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) float64 degrees of UTM grid points.

    easting, northing: (N,) metres (with the false easting 500 km and, in the south, the
    false northing 10,000 km); zone: 1..60; south: True for a southern-hemisphere zone.
    """
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone must be in 1..60, got {zone}")
    n = WGS84_F / (2 - WGS84_F)
    big_a = WGS84_A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    beta = (
        n / 2 - 2 * n**2 / 3 + 37 * n**3 / 96 - n**4 / 360,
        n**2 / 48 + n**3 / 15 - 437 * n**4 / 1440,
        17 * n**3 / 480 - 37 * n**4 / 840,
        4397 * n**4 / 161280,
    )
    delta = (
        2 * n - 2 * n**2 / 3 - 2 * n**3 + 116 * n**4 / 45,
        7 * n**2 / 3 - 8 * n**3 / 5 - 227 * n**4 / 45,
        56 * n**3 / 15 - 136 * n**4 / 35,
        4279 * n**4 / 630,
    )
    x = np.asarray(easting, dtype=np.float64) - FALSE_EASTING
    y = np.asarray(northing, dtype=np.float64) - (FALSE_NORTHING_SOUTH if south else 0.0)
    xi = y / (K0 * big_a)
    eta = x / (K0 * big_a)
    xi_p, eta_p = xi.copy(), eta.copy()
    for j, b in enumerate(beta, start=1):
        xi_p -= b * np.sin(2 * j * xi) * np.cosh(2 * j * eta)
        eta_p -= b * np.cos(2 * j * xi) * np.sinh(2 * j * eta)
    chi = np.arcsin(np.sin(xi_p) / np.cosh(eta_p))
    lat = chi.copy()
    for j, d in enumerate(delta, start=1):
        lat += d * np.sin(2 * j * chi)
    lon0 = np.radians(6.0 * zone - 183.0)
    lon = lon0 + np.arctan2(np.sinh(eta_p), np.cos(xi_p))
    return np.degrees(lat), (np.degrees(lon) + 180.0) % 360.0 - 180.0
