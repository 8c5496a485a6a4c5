"""Evaluation and mining at VIGOR same-area test scale: time and extra memory.

Compares, in one run on one device:
- bare blocked matmuls (the floor: the same blocks, scores only, nothing reduced),
- s4g.retrieval.evaluate.retrieval_metrics (R@k, R@1%, AP, hit rate),
- s4g.retrieval.mining.similar_references, k=128 (Rust merge on the CPU; the torch path beside it),
- faiss-cpu IndexFlatIP exact search, k=128 (when faiss is installed),
- the dense approach (full Q×R matrix + argsort per row) at a scale where it fits.

Embeddings are random unit vectors; each query is its positive reference plus noise sized
so that the positive's cosine is near the best distractor's (~4.2/sqrt(D)), so ranks spread
as for a half-trained model. Each comparison is run `--repeat` times, interleaved with its
bare-matmul floor, and the best time of each is kept (the machine is shared). Extra memory = peak resident set size
during a step minus the size before it (Linux /proc/self/clear_refs + VmHWM), inputs excluded.

    python benches/bench_eval.py                 # D=1024, full scale (minutes on 2 cores)
    python benches/bench_eval.py --scale 0.25    # a quarter of Q and of R (1/16 the work)
    python benches/bench_eval.py --quick         # D=32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from harness import banner, parse, table, write_result

from s4g.retrieval import evaluate, mining
from s4g.retrieval.evaluate import retrieval_metrics
from s4g.retrieval.mining import similar_references
from s4g.runtime import pick_device

VIGOR_Q, VIGOR_R = 52_605, 90_618


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def measure(fn, repeat: int = 1):
    """(result, best seconds, extra peak RSS bytes) of fn()."""
    best, extra, result = float("inf"), 0, None
    for _ in range(repeat):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        before = _status()["VmRSS"]
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        extra = max(extra, _status()["VmHWM"] - before)
    return result, best, extra


def make_data(n_q: int, n_r: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ref = torch.randn(n_r, dim, generator=torch.Generator().manual_seed(seed))
    ref = torch.nn.functional.normalize(ref, dim=1)
    q_labels = rng.choice(n_r, size=n_q, replace=False).astype(np.int64)
    cos = min(0.9, 4.2 / dim**0.5)  # positive ~ as close as the best of ~1e5 random rows
    noise = (1 / cos**2 - 1) ** 0.5
    query = ref[torch.from_numpy(q_labels)] + noise / dim**0.5 * torch.randn(n_q, dim)
    query = torch.nn.functional.normalize(query, dim=1)
    semi = rng.integers(0, n_r, size=(n_q, 3)).astype(np.int64)
    return query.numpy(), ref.numpy(), q_labels, np.arange(n_r, dtype=np.int64), semi


def bare_products(q: np.ndarray, r: np.ndarray, block: tuple[int, int]) -> None:
    qt, rt = torch.from_numpy(q), torch.from_numpy(r)
    buf = torch.empty(block[0] * block[1])
    with torch.inference_mode():
        for q0 in range(0, qt.shape[0], block[0]):
            qb = qt[q0 : q0 + block[0]]
            for r0 in range(0, rt.shape[0], block[1]):
                rb = rt[r0 : r0 + block[1]]
                torch.matmul(qb, rb.T, out=buf[: qb.shape[0] * rb.shape[0]].view(qb.shape[0], rb.shape[0]))


def dense_metrics(q, r, ql, rl):
    """The reference approach: the whole score matrix, then a full argsort of every row."""
    scores = q @ r.T
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.argmax(rl[order] == ql[:, None], axis=1)  # one positive per query here
    return {"R@1": 100 * float(np.mean(ranks < 1)), "R@10": 100 * float(np.mean(ranks < 10))}


def dense_mining(q, r, k, exclude):
    scores = q @ r.T
    scores[np.arange(q.shape[0]), exclude] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def faiss_search(q, r, k):
    import faiss

    index = faiss.IndexFlatIP(r.shape[1])
    index.add(r)
    return index.search(q, k + 1)[1]  # +1: the excluded row may be among them


def dense_comparisons(args, dim, device, record) -> None:
    """The dense approach (full matrix + argsort) beside ours, at --dense-scale."""
    d_q, d_r = max(1, round(VIGOR_Q * args.dense_scale)), max(2, round(VIGOR_R * args.dense_scale))
    dq, dr, dql, drl, _ = make_data(d_q, d_r, dim, seed=1)
    dense, t_dense, m_dense = measure(lambda: dense_metrics(dq, dr, dql, drl))
    ours, t_ours, m_ours = measure(lambda: retrieval_metrics(dq, dr, dql, drl, device=device))
    assert all(abs(ours[key] - dense[key]) < 1e-9 for key in dense), (ours, dense)
    record(f"dense metrics (matrix+argsort) {d_q}x{d_r}", t_dense, m_dense)
    record(f"retrieval_metrics {d_q}x{d_r}", t_ours, m_ours)
    dexcl = dql.copy()
    dn, t_dense, m_dense = measure(lambda: dense_mining(dq, dr, args.k, dexcl))
    on, t_ours, m_ours = measure(lambda: similar_references(dq, dr, args.k, dexcl, device=device))
    record(f"dense mining (matrix+argsort) {d_q}x{d_r}", t_dense, m_dense)
    # float32 products from two BLAS libraries differ in the last bits, so near-ties may swap:
    # report how many rows agree exactly and the largest score gap where they do not
    exact = dq.astype(np.float64) @ dr.astype(np.float64).T
    gap = np.abs(np.take_along_axis(exact, dn, 1) - np.take_along_axis(exact, on, 1)).max()
    record(f"similar_references {d_q}x{d_r}", t_ours, m_ours,
           rows_equal_to_dense=float(np.mean((dn == on).all(axis=1))), max_score_gap=float(gap))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="D=32 instead of --dim")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Q and of R to run")
    ap.add_argument("--dense-scale", type=float, default=0.1, help="fraction for the dense approach")
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2, help="runs per step; the best is kept")
    ap.add_argument("--no-torch-mining", action="store_true", help="skip the torch top-k path on CPU")
    ap.add_argument("--mining-only", action="store_true",
                    help="only mining: skip retrieval_metrics and the dense comparisons")
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/bench_eval.json)")
    args = parse(ap, smoke={"scale": 0.01, "dense_scale": 0.01, "dim": 32, "k": 8, "repeat": 1}, argv=argv)
    dim = 32 if args.quick else args.dim
    n_q, n_r = max(1, round(VIGOR_Q * args.scale)), max(2, round(VIGOR_R * args.scale))
    device = pick_device("auto")
    banner(device=device, Q=n_q, R=n_r, D=dim, scale=args.scale, k=args.k)
    q, r, ql, rl, semi = make_data(n_q, n_r, dim)
    exclude = ql.copy()  # mining: skip each query's own positive, as DSS does
    rows, results = [], {}

    def record(name, seconds, extra, floor=None, **info):
        rows.append((name, seconds, extra, floor))
        results[name] = {"seconds": seconds, "extra_bytes": extra,
                         "vs_bare": None if floor is None else seconds / floor, **info}

    def paired(floor_block, fn):
        """(result, seconds, extra, floor seconds, floor extra): best of --repeat, interleaved."""
        best = [float("inf"), 0, float("inf"), 0]
        result = None
        for _ in range(args.repeat):
            _, tb, mb = measure(lambda: bare_products(q, r, floor_block))
            result, t, m = measure(fn)
            best = [min(best[0], t), max(best[1], m), min(best[2], tb), max(best[3], mb)]
        return (result, *best)

    bare_products(q[:256], r[:8192], evaluate.CPU_BLOCK)  # warm-up
    metrics = {}
    if not args.mining_only:
        metrics, t, m, t_bare_e, m_bare = paired(
            evaluate.CPU_BLOCK, lambda: retrieval_metrics(q, r, ql, rl, semi, device=device))
        record(f"bare matmuls {evaluate.CPU_BLOCK}", t_bare_e, m_bare)
        record("retrieval_metrics (+hit rate)", t, m, t_bare_e, metrics=metrics)
    nb, t, m, t_bare_m, m_bare = paired(
        mining.CPU_BLOCK, lambda: similar_references(q, r, args.k, exclude, device=device))
    record(f"bare matmuls {mining.CPU_BLOCK}", t_bare_m, m_bare)
    record(f"similar_references k={args.k} (auto: rust on cpu)", t, m, t_bare_m)
    if device.type == "cpu" and not args.no_torch_mining:
        nb_t, t, m = measure(lambda: similar_references(q, r, args.k, exclude, device=device, method="torch"))
        record(f"similar_references k={args.k} (torch path)", t, m, t_bare_m,
               same_as_auto=bool(np.array_equal(nb, nb_t)))
    try:
        found, t, m = measure(lambda: faiss_search(q, r, args.k), repeat=args.repeat)
        agree = float(np.mean([np.array_equal(f[f != e][: args.k], n) for f, n, e in zip(found[:1000], nb, exclude)]))
        record(f"faiss IndexFlatIP k={args.k}+1", t, m, t_bare_m, rows_equal_first_1000=agree)
    except ImportError:
        print("faiss not installed: `pip install faiss-cpu` to compare against it")

    if not args.mining_only:
        dense_comparisons(args, dim, device, record)
    table(["step", "seconds", "extra MB", "x bare"],
          [(name, seconds, round(extra / 2**20), "" if floor is None else f"{seconds / floor:.2f}")
           for name, seconds, extra, floor in rows])
    print("metrics:", {k: round(v, 2) for k, v in metrics.items()})
    write_result("bench_eval", {"device": str(device), "Q": n_q, "R": n_r, "D": dim, "k": args.k,
                                "scale": args.scale, "repeat": args.repeat, "dense_scale": args.dense_scale,
                                "results": results}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
