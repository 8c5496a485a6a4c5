"""gps_neighbours equals the brute-force haversine oracle exactly, and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import haversine_np, knn_bruteforce

from s4g.errors import UserInputError
from s4g.sampling import EARTH_RADIUS_M, gps_neighbours

# Special values where great-circle code usually breaks: poles, the antimeridian, zero.
LATS = st.one_of(st.floats(-90, 90), st.sampled_from([90.0, -90.0, 89.999999, 0.0, -0.0]))
LONS = st.one_of(st.floats(-180, 180), st.sampled_from([180.0, -180.0, 179.99999, -179.99999, 0.0]))


@st.composite
def point_sets(draw):
    """Small sets with frequent duplicates and clusters; k anywhere in [1, N-1]."""
    base = draw(st.lists(st.tuples(LATS, LONS), min_size=1, max_size=25))
    copies = draw(st.lists(st.integers(0, len(base) - 1), max_size=10))
    # a dense cluster a few metres across gives near-ties that chord distances misorder
    cluster = draw(st.integers(0, 8))
    pts = base + [base[i] for i in copies]
    lat0, lon0 = base[0]
    jitter = draw(st.lists(st.tuples(st.floats(-3e-5, 3e-5), st.floats(-3e-5, 3e-5)),
                           min_size=cluster, max_size=cluster))
    pts += [(float(np.clip(lat0 + a, -90, 90)), float(np.clip(lon0 + b, -180, 180))) for a, b in jitter]
    if len(pts) < 2:
        pts.append(pts[0])
    order = draw(st.permutations(range(len(pts))))
    lat = np.array([pts[i][0] for i in order])
    lon = np.array([pts[i][1] for i in order])
    k = draw(st.integers(1, len(pts) - 1))
    return lat, lon, k


@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_equals_brute_force(case):
    lat, lon, k = case
    idx, dist = gps_neighbours(lat, lon, k)
    want_idx, want_dist = knn_bruteforce(lat, lon, k)
    assert idx.dtype == np.int64 and dist.dtype == np.float64 and idx.shape == (lat.size, k)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(dist, want_dist)


def test_distance_definition_matches_textbook_haversine():
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)
    idx, dist = gps_neighbours(lat, lon, 5)
    textbook = haversine_np(lat[:, None], lon[:, None], lat[idx], lon[idx])
    np.testing.assert_allclose(dist, textbook, rtol=1e-9, atol=1e-6)


def test_city_scale_and_known_values():
    # four points on the equator one degree apart; and N = k + 1
    lat = np.zeros(4)
    lon = np.array([0.0, 1.0, 2.0, 3.0])
    idx, dist = gps_neighbours(lat, lon, 3)
    np.testing.assert_array_equal(idx[0], [1, 2, 3])
    np.testing.assert_array_equal(idx[1], [0, 2, 3])  # 0 and 2 tie: lower index first
    np.testing.assert_allclose(dist[0], EARTH_RADIUS_M * np.radians([1.0, 2.0, 3.0]), rtol=1e-12)


def test_accepts_lists_and_other_dtypes():
    idx, dist = gps_neighbours([0, 0, 1], np.array([0, 1, 0], dtype=np.float32), 1)
    np.testing.assert_array_equal(idx[:, 0], [1, 0, 0])
    assert dist.dtype == np.float64


@pytest.mark.parametrize(
    ("lat", "lon", "k", "message"),
    [
        ([0.0, 1.0], [0.0], 1, "differ in length"),
        ([0.0, np.nan], [0.0, 1.0], 1, "finite; row 1"),
        ([0.0, 1.0], [0.0, np.inf], 1, "finite; row 1"),
        ([0.0, 90.5], [0.0, 1.0], 1, "latitude"),
        ([0.0, 1.0], [0.0, -181.0], 1, "longitude"),
        ([0.0, 1.0], [0.0, 1.0], 0, "k must be at least 1"),
        ([0.0, 1.0], [0.0, 1.0], -1, "k must be at least 1"),  # not pyo3's OverflowError
        ([0.0, 1.0], [0.0, 1.0], 2, "k must be smaller than the number of points (2)"),
        ([], [], 1, "number of points (0)"),
        ([[0.0, 1.0]], [[0.0, 1.0]], 1, "lat_deg must be 1-dimensional"),
        (["a", "b"], [0.0, 1.0], 1, "lat_deg must be convertible"),
        ([0.0, 1.0], [0.0, 1.0], 1.5, "k must be an integer"),
    ],
)
def test_bad_input(lat, lon, k, message):
    with pytest.raises(UserInputError, match=None) as info:
        gps_neighbours(lat, lon, k)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_rust_checks_directly():
    from s4g import _sampler

    with pytest.raises(ValueError, match="latitude"):
        _sampler.gps_neighbours(np.array([0.0, 95.0]), np.array([0.0, 0.0]), 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _sampler.gps_neighbours(np.zeros(6)[::2], np.zeros(3), 1)
