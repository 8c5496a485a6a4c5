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
import os
import platform
import time
from pathlib import Path

import numpy as np

from s4g.fileio import save_json
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


def best_time(fn, repeats: int, *args):
    """(best wall seconds, CPU seconds of that run (all threads), result)."""
    runs, out = [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = min(runs)
    return wall, cpu, out


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
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_gps.json")
    args = ap.parse_args()
    threads = os.environ.get("RAYON_NUM_THREADS", "unset")
    print(f"points={args.points:,} k={args.k} RAYON_NUM_THREADS={threads} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f} {platform.processor() or platform.machine()}")
    lat, lon = vigor_like(args.points)
    for fn in (run_s4g, run_balltree, run_ckdtree):  # warm-up: imports, thread pools, caches
        fn(lat[:2000], lon[:2000], 16)

    t_ours, cpu_ours, (idx, dist) = best_time(run_s4g, args.repeats, lat, lon, args.k)
    t_ckd, cpu_ckd, (c_idx, c_chord) = best_time(run_ckdtree, args.repeats, lat, lon, args.k)
    t_bt, cpu_bt, (b_idx, b_dist) = best_time(run_balltree, args.balltree_repeats, lat, lon, args.k)

    c_idx, c_chord = drop_self(c_idx, c_chord, args.k)
    c_dist = 2 * EARTH_RADIUS_M * np.arcsin(np.clip(c_chord / 2, 0, 1))
    b_idx, b_dist = drop_self(b_idx, b_dist, args.k)
    agree = {
        "balltree_idx_equal_share": float(np.mean(b_idx == idx)),
        "balltree_max_dist_diff_m": float(np.max(np.abs(b_dist - dist))),
        "ckdtree_idx_equal_share": float(np.mean(c_idx == idx)),
        "ckdtree_max_dist_diff_m": float(np.max(np.abs(c_dist - dist))),
    }
    rows = [("s4g gps_neighbours (rayon)", t_ours, cpu_ours), ("sklearn BallTree haversine", t_bt, cpu_bt),
            ("scipy cKDTree 3-D, workers=2", t_ckd, cpu_ckd)]
    # CPU seconds (all threads) say how much work each did, whatever else runs on the machine.
    print(f"{'method':32} {'wall s':>8} {'wall ratio':>11} {'cpu s':>8} {'cpu ratio':>10}")
    for name, t, cpu in rows:
        print(f"{name:32} {t:8.3f} {t / t_ours:10.1f}x {cpu:8.3f} {cpu / cpu_ours:9.1f}x")
    print("agreement with baselines:", json.dumps(agree))
    save_json(args.out, {
        "points": args.points, "k": args.k, "repeats": args.repeats, "rayon_num_threads": threads,
        "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
        "seconds": {"s4g": t_ours, "balltree": t_bt, "ckdtree_workers2": t_ckd},
        "cpu_seconds": {"s4g": cpu_ours, "balltree": cpu_bt, "ckdtree_workers2": cpu_ckd},
        "speedup": {"vs_balltree": t_bt / t_ours, "vs_ckdtree": t_ckd / t_ours},
        "median_nearest_m": float(np.median(dist[:, 0])), "agreement": agree,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
