"""Batch packing: s4g.sampling.pack_batches vs the same greedy algorithm in plain Python.

VIGOR-like input: 52,609 pairs over ~35k tiles (one tile per 1-2 pairs), each tile's 128
nearest tiles by GPS as its neighbour list (hardest first), batch 128, neighbour_select 64.
The baseline below is a straightforward plain-Python implementation of the same rule
(random.Random draws, sets, a deque, lists copied when first changed). Both are timed in the
same run after a warm-up (s4g: best of --repeats, baseline: best of --baseline-repeats).
Quality, the same way for both: the share of pairs placed, the share placed through a
neighbour list (each implementation's own count), and, from the output alone, the share of
pairs whose class is a listed neighbour of another class in their batch.

    python benches/bench_pack.py [--pairs 52609] [--classes 35000] [--repeats 50]
Writes benches/results/bench_pack.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from s4g.fileio import save_json
from s4g.sampling import gps_neighbours, pack_batches

sys.path.insert(0, str(Path(__file__).parent))
from bench_gps import vigor_like  # noqa: E402


def pack_python(pair_class: list[int], neighbours: list[list[int]], batch_size: int, select: int, seed: int):
    """The same rule, written plainly: returns (batches as lists of pair ids, pairs pulled in)."""
    rng = random.Random(seed)
    queue = deque(rng.sample(range(len(pair_class)), len(pair_class)))
    unused: dict[int, list[int]] = {}
    for p, c in enumerate(pair_class):
        unused.setdefault(c, []).append(p)
    lists: dict[int, list[int]] = {}  # the lists changed this epoch (copied on first removal)
    used, batches, batch, in_batch, half = set(), [], [], set(), select // 2
    failed = via = batch_via = 0

    def add(q: int, qc: int) -> None:
        used.add(q)
        unused[qc].remove(q)
        batch.append(q)
        in_batch.add(qc)

    while queue and failed < 1024:
        p = queue.popleft()
        c = pair_class[p]
        if p in used or c in in_batch:
            if p not in used:
                queue.append(p)
            failed += 1
            continue
        failed = 0
        add(p, c)
        if len(batch) < batch_size:
            near = lists.get(c, neighbours[c])
            rest = near[half:]
            for nc in near[:half] + rng.sample(rest, min(half, len(rest))):
                if len(batch) == batch_size:
                    break
                if nc not in in_batch and unused.get(nc):
                    add(rng.choice(unused[nc]), nc)
                    batch_via += 1
                    lists.setdefault(c, list(near)).remove(nc)
        if len(batch) == batch_size:
            batches.append(batch)
            via += batch_via
            batch, in_batch, batch_via = [], set(), 0
    return batches, via


def neighbour_share(batches: np.ndarray, pair_class: np.ndarray, neighbours: np.ndarray) -> float:
    """Share of pairs whose class is in the neighbour list of another class of their batch."""
    n_classes = neighbours.shape[0]
    edges = np.unique(np.repeat(np.arange(n_classes), neighbours.shape[1]) * n_classes + neighbours.ravel())
    hits = 0
    for batch in batches:
        cls = pair_class[batch]
        keys = cls[:, None] * n_classes + cls[None, :]  # (anchor class, candidate class)
        np.fill_diagonal(keys, -1)
        pos = np.minimum(np.searchsorted(edges, keys), edges.size - 1)
        hits += int((edges[pos] == keys).any(axis=0).sum())
    return hits / max(1, batches.size)


def best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=52_609)
    ap.add_argument("--classes", type=int, default=35_000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--select", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--baseline-repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_pack.json")
    args = ap.parse_args()
    threads = os.environ.get("RAYON_NUM_THREADS", "unset")
    print(f"pairs={args.pairs:,} classes={args.classes:,} width={args.width} batch={args.batch_size} "
          f"select={args.select} RAYON_NUM_THREADS={threads} (packing is single-threaded) "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} {platform.machine()}")
    rng = np.random.default_rng(0)
    lat, lon = vigor_like(args.classes)
    neighbours, _ = gps_neighbours(lat, lon, args.width)
    pair_class = np.concatenate([rng.permutation(args.classes),
                                 rng.integers(0, args.classes, args.pairs - args.classes)])
    pc_list, nb_list = pair_class.tolist(), neighbours.tolist()

    def ours():
        return pack_batches(pair_class, neighbours, args.batch_size, args.select, seed=1, return_stats=True)

    def baseline():
        return pack_python(pc_list, nb_list, args.batch_size, args.select, seed=1)

    ours()  # warm-up
    t_ours, med_ours, (batches, stats) = best_time(ours, args.repeats)
    t_py, med_py, (py_batches, py_via) = best_time(baseline, args.baseline_repeats)
    py_batches = np.array(py_batches, dtype=np.int64).reshape(-1, args.batch_size)
    share = {"s4g": neighbour_share(batches, pair_class, neighbours),
             "python": neighbour_share(py_batches, pair_class, neighbours)}
    placed = {"s4g": batches.size / args.pairs, "python": py_batches.size / args.pairs}
    via = {"s4g": stats["via_neighbour"] / args.pairs, "python": py_via / args.pairs}
    print(f"{'method':28} {'best s':>9} {'median s':>9} {'python / s4g':>13} {'placed':>7} {'via nb':>7} "
          f"{'nb share':>9}")
    for name, t, med, key in (("s4g pack_batches (Rust)", t_ours, med_ours, "s4g"),
                              ("plain-Python greedy", t_py, med_py, "python")):
        print(f"{name:28} {t:9.4f} {med:9.4f} {t / t_ours:12.1f}x {placed[key]:7.2%} {via[key]:7.2%} "
              f"{share[key]:9.2%}")
    save_json(args.out, {
        "pairs": args.pairs, "classes": args.classes, "width": args.width, "batch_size": args.batch_size,
        "neighbour_select": args.select, "rayon_num_threads": threads, "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "seconds_best": {"s4g": t_ours, "python": t_py},
        "seconds_median": {"s4g": med_ours, "python": med_py},
        "speedup_best": t_py / t_ours, "placed_share": placed, "via_neighbour_share": via,
        "neighbour_share": share,
        "s4g_stats": dict(stats),
        "batches": {"s4g": int(batches.shape[0]), "python": int(py_batches.shape[0])},
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
