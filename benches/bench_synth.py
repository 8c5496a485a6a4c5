"""Bench: `s4g synth` writing the CVUSA layout at the release's real image sizes.

    python benches/bench_synth.py [--locations 1000] [--workers 2] [--out DIR]

Target: 1,000 locations (750x750 aerial + 1232x224 panorama JPEGs each) in under a minute on
2 cores. Baselines measured in the same run: the same writer with one worker, and a plain-
Python ray marcher (one ray per pixel, same geometry) rendering one panorama, against the
vectorised renderer on the same panorama. Writes JSON to benches/results/bench_synth.json.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import banner, parse, table, write_result

from s4g.app.synth import render as sr
from s4g.app.synth import world as sw
from s4g.app.synth.writer import SIZES, write_layout


def python_panorama(world: sw.World, y: float, x: float, hw: tuple[int, int], eye_m: float = 2.0,
                    range_m: float = 48.0, step_m: float = 0.5) -> np.ndarray:
    """Plain-Python reference: march every pixel's ray until it meets the height map; top
    colour of the cell hit, sky otherwise (no facades/fog: a lower bound on its cost)."""
    H, W = hw
    out = np.zeros((H, W, 3), np.uint8)
    height, top = world.height.tolist(), world.top
    for c in range(W):
        az = math.radians(((c + 0.5) / W - 0.5) * 360.0)
        dy, dx = -math.cos(az), math.sin(az)
        for r in range(H):
            tan = math.tan(math.radians((0.5 - (r + 0.5) / H) * 360.0 * H / W))
            colour = sw.SKY_HORIZON
            for k in range(int(range_m / step_m)):
                d = (k + 0.5) * step_m
                iy, ix = int(y + dy * d), int(x + dx * d)
                if height[iy][ix] >= eye_m + d * tan:
                    colour = top[iy, ix]
                    break
            out[r, c] = colour
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_write(root: Path, locations: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of writing `locations` CVUSA pairs at real sizes."""
    if root.exists():
        shutil.rmtree(root)
    t, c = time.perf_counter(), _cpu_seconds()
    write_layout("cvusa", root, locations=locations, seed=0, size="real", workers=workers)
    return time.perf_counter() - t, _cpu_seconds() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--locations", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-locations", type=int, default=200, help="locations of the 1-worker run")
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parse(ap, smoke={"locations": 8, "workers": 1, "baseline_locations": 4})
    banner(locations=args.locations, workers=args.workers)
    scratch = args.out or Path(tempfile.mkdtemp(prefix="s4g-bench-synth-"))
    sizes = SIZES["cvusa"]["real"]
    try:
        t_par, cpu_par = _timed_write(scratch / "par", args.locations, args.workers)
        t_one, cpu_one = _timed_write(scratch / "one", args.baseline_locations, 1)
        n_bytes = sum(p.stat().st_size for p in (scratch / "par").rglob("*") if p.is_file())
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)
    world = sw.make_world((640, 640), 1)
    (y, x), = sw.road_points(world, 1, 10.0, 50.0, np.random.default_rng(0))
    hw = tuple(sizes["ground"])
    t = time.perf_counter()
    sr.render_panorama(world, y, x, hw)
    t_vec = time.perf_counter() - t
    rows = max(8, hw[0] // 8)  # the Python baseline renders a horizontal band, scaled up
    t = time.perf_counter()
    python_panorama(world, y, x, (rows, hw[1]))
    t_py = (time.perf_counter() - t) * hw[0] / rows
    per_loc = t_par / args.locations
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    table(["what", "seconds", "per 1000 loc", "CPU s / 1000"], [
        (f"{args.locations} locations, {args.workers} workers", t_par, per_loc * 1000, cpu_par / args.locations * 1000),
        (f"baseline: {args.baseline_locations} locations, 1 worker", t_one, t_one / args.baseline_locations * 1000,
         cpu_one / args.baseline_locations * 1000),
        ("one panorama, vectorised", t_vec, "", ""),
        (f"one panorama, plain Python (scaled; {t_py / t_vec:.0f}x slower)", t_py, "", ""),
    ])
    print(f"target: 1000 locations < 60 s -> {'met' if per_loc * 1000 < 60.0 else 'NOT met'} "
          f"({cpus} CPUs visible, {n_bytes / 1e6:.0f} MB written)")
    write_result("bench_synth", {
        "layout": "cvusa", "size": "real", "aerial": sizes["aerial"], "ground_hw": list(hw),
        "locations": args.locations, "workers": args.workers, "seconds": t_par,
        "locations_per_s": args.locations / t_par, "cpu_seconds": cpu_par, "bytes_written": n_bytes,
        "baseline_1_worker": {"locations": args.baseline_locations, "seconds": t_one, "cpu_seconds": cpu_one,
                              "seconds_per_1000": t_one / args.baseline_locations * 1000},
        "panorama_vectorised_s": t_vec, "panorama_plain_python_s": t_py, "panorama_speedup": t_py / t_vec,
        "target_s_per_1000": 60.0, "meets_target": per_loc * 1000 < 60.0, "cpus_visible": cpus,
    })


if __name__ == "__main__":
    main()
