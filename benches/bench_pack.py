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
import random
from collections import deque

import numpy as np
from bench_gps import vigor_like
from harness import banner, parse, table, timed, write_result

from s4g.sampling import gps_neighbours, pack_batches


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=52_609)
    ap.add_argument("--classes", type=int, default=35_000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--select", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--baseline-repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/bench_pack.json)")
    args = parse(ap, smoke={"pairs": 2000, "classes": 1500, "repeats": 2, "baseline_repeats": 1})
    banner(pairs=args.pairs, classes=args.classes, width=args.width, batch=args.batch_size, select=args.select,
           note="packing is single-threaded")
    rng = np.random.default_rng(0)
    lat, lon = vigor_like(args.classes)
    neighbours, _ = gps_neighbours(lat, lon, args.width)
    pair_class = np.concatenate([rng.permutation(args.classes),
                                 rng.integers(0, args.classes, args.pairs - args.classes)])
    pc_list, nb_list = pair_class.tolist(), neighbours.tolist()

    ours = timed(lambda: pack_batches(pair_class, neighbours, args.batch_size, args.select, seed=1,
                                      return_stats=True), args.repeats, warmup=1)
    py = timed(lambda: pack_python(pc_list, nb_list, args.batch_size, args.select, seed=1), args.baseline_repeats)
    batches, stats = ours.result
    py_batches = np.array(py.result[0], dtype=np.int64).reshape(-1, args.batch_size)
    share = {"s4g": neighbour_share(batches, pair_class, neighbours),
             "python": neighbour_share(py_batches, pair_class, neighbours)}
    placed = {"s4g": batches.size / args.pairs, "python": py_batches.size / args.pairs}
    via = {"s4g": stats["via_neighbour"] / args.pairs, "python": py.result[1] / args.pairs}
    table(["method", "best s", "median s", "python / s4g", "placed", "via nb", "nb share"],
          [(name, t.best, t.median, f"{t.best / ours.best:.1f}x", f"{placed[key]:.2%}", f"{via[key]:.2%}",
            f"{share[key]:.2%}")
           for name, t, key in (("s4g pack_batches (Rust)", ours, "s4g"), ("plain-Python greedy", py, "python"))])
    write_result("bench_pack", {
        "pairs": args.pairs, "classes": args.classes, "width": args.width, "batch_size": args.batch_size,
        "neighbour_select": args.select, "repeats": args.repeats,
        "seconds_best": {"s4g": ours.best, "python": py.best},
        "seconds_median": {"s4g": ours.median, "python": py.median},
        "speedup_best": py.best / ours.best, "placed_share": placed, "via_neighbour_share": via,
        "neighbour_share": share, "s4g_stats": dict(stats),
        "batches": {"s4g": int(batches.shape[0]), "python": int(py_batches.shape[0])},
    }, args.out)


if __name__ == "__main__":
    main()
