"""Exact GPS k-NN: s4g.sampling.gps_neighbours vs scikit-learn BallTree and scipy cKDTree.

VIGOR-like points: 4 city clusters of ~22.6k tiles on a jittered grid tens of metres apart
(90,618 in all), k = 128. Baselines run in the same process on the same points:
  BallTree(metric="haversine") on radians, query k+1 (self included), distances x R;
  cKDTree on 3-D unit vectors, query k+1 with workers=2 (chord distances; the time is the
  build + query only, converting chords to metres would add to it).
Each method is warmed up on a small subset, then timed (best of --repeats). The neighbour
lists are compared with ours (distances must agree; order may differ only inside ties).

    python benches/bench_gps.py [--points 90618] [--k 128] [--repeats 3]
Writes benches/results/bench_gps.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from harness import banner, parse, table, timed, write_result

from s4g.sampling import EARTH_RADIUS_M, gps_neighbours

CITIES = [(40.7128, -74.0060), (47.6062, -122.3321), (37.7749, -122.4194), (41.8781, -87.6298)]


def vigor_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points in 4 city grids, ~25-45 m spacing with a few metres of jitter."""
    rng = np.random.default_rng(seed)
    lat, lon = [], []
    for c, (la, lo) in enumerate(CITIES):
        m = n // 4 + (c < n % 4)
        side = int(np.ceil(np.sqrt(m)))
        g = np.arange(m)
        lat.append(la + (g // side) * 3.0e-4 + rng.normal(0, 2e-5, m))
        lon.append(lo + (g % side) * 4.0e-4 / np.cos(np.radians(la)) + rng.normal(0, 2e-5, m))
    return np.concatenate(lat), np.concatenate(lon)


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    p, lam = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(p) * np.cos(lam), np.cos(p) * np.sin(lam), np.sin(p)], axis=1)


def run_s4g(lat, lon, k):
    return gps_neighbours(lat, lon, k)


def run_balltree(lat, lon, k):
    from sklearn.neighbors import BallTree

    x = np.radians(np.stack([lat, lon], axis=1))
    dist, idx = BallTree(x, metric="haversine").query(x, k=k + 1)
    return idx, dist * EARTH_RADIUS_M


def run_ckdtree(lat, lon, k):
    from scipy.spatial import cKDTree

    x = unit_vectors(lat, lon)
    chord, idx = cKDTree(x).query(x, k=k + 1, workers=2)
    return idx, chord


def drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (wherever ties put it) and keep k columns."""
    rows = np.arange(idx.shape[0])[:, None]
    keep = idx != rows
    # rows where self was not returned (k+1 duplicates ahead of it): drop the last column
    keep[keep.all(axis=1), -1] = False
    return idx[keep].reshape(-1, k), dist[keep].reshape(-1, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=90_618)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--balltree-repeats", type=int, default=1, help="BallTree takes seconds per run")
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/bench_gps.json)")
    args = parse(ap, smoke={"points": 2000, "k": 8, "repeats": 1})
    banner(points=args.points, k=args.k)
    lat, lon = vigor_like(args.points)
    for fn in (run_s4g, run_balltree, run_ckdtree):  # warm-up: imports, thread pools, caches
        fn(lat[:2000], lon[:2000], 16)

    ours = timed(lambda: run_s4g(lat, lon, args.k), args.repeats)
    ckd = timed(lambda: run_ckdtree(lat, lon, args.k), args.repeats)
    bt = timed(lambda: run_balltree(lat, lon, args.k), args.balltree_repeats)
    idx, dist = ours.result
    c_idx, c_chord = drop_self(*ckd.result, args.k)
    c_dist = 2 * EARTH_RADIUS_M * np.arcsin(np.clip(c_chord / 2, 0, 1))
    b_idx, b_dist = drop_self(*bt.result, args.k)
    agree = {
        "balltree_idx_equal_share": float(np.mean(b_idx == idx)),
        "balltree_max_dist_diff_m": float(np.max(np.abs(b_dist - dist))),
        "ckdtree_idx_equal_share": float(np.mean(c_idx == idx)),
        "ckdtree_max_dist_diff_m": float(np.max(np.abs(c_dist - dist))),
    }
    # CPU seconds (all threads) say how much work each did, whatever else runs on the machine.
    rows = [("s4g gps_neighbours (rayon)", ours), ("sklearn BallTree haversine", bt),
            ("scipy cKDTree 3-D, workers=2", ckd)]
    table(["method", "wall s", "wall ratio", "cpu s", "cpu ratio"],
          [(n, t.best, f"{t.best / ours.best:.1f}x", t.cpu, f"{t.cpu / ours.cpu:.1f}x") for n, t in rows])
    print("agreement with baselines:", json.dumps(agree))
    write_result("bench_gps", {
        "points": args.points, "k": args.k, "repeats": args.repeats,
        "seconds": {"s4g": ours.best, "balltree": bt.best, "ckdtree_workers2": ckd.best},
        "cpu_seconds": {"s4g": ours.cpu, "balltree": bt.cpu, "ckdtree_workers2": ckd.cpu},
        "speedup": {"vs_balltree": bt.best / ours.best, "vs_ckdtree": ckd.best / ours.best},
        "median_nearest_m": float(np.median(dist[:, 0])), "agreement": agree,
    }, args.out)


if __name__ == "__main__":
    main()
