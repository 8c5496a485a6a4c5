"""Epoch-0 evaluation and a DSS re-mining of a synthetic VIGOR-layout world, by 1 or 2
processes (gloo on the CPU).

The world is what `s4g synth --layout vigor` writes; the model is a freshly initialised
--backbone (default: the synthetic preset's convnext_micro_ls1), so the evaluation is the
epoch-0 evaluation of a run. Modes, each in fresh processes:
  1 process, default threads   `s4g eval` without torchrun (torch uses every core)
  1 process, 1 thread          the budget torchrun gives each process (OMP_NUM_THREADS=1)
  2 processes, 1 thread each   `torchrun --nproc-per-node 2 ... eval`: sharded embedding
Each job runs once to warm up, then --repeats times (best and median kept), every rank
starting together at a barrier; the modes take turns for --rounds rounds and the best round
of each counts (the machine is shared). "scoring" is the part rank 0 does alone on the gathered
embeddings (the metrics; for mining, the class means and the top-k), timed by itself: it says
whether splitting it across ranks would pay.

    python benches/bench_dist_eval.py [--locations 400] [--aerial-size 128]
        [--ground-size 64 128] [--batch-size 32] [--repeats 3] [--rounds 2] [--world DIR]
Writes benches/results/bench_dist_eval.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from harness import banner, parse, table, timed, write_result

from s4g import distributed as D
from s4g.app.jobs.inference import evaluate_split, mine_training_set
from s4g.app.synth.writer import write_layout
from s4g.data.registry import load_eval, load_train
from s4g.model.encoder import build_model
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_eval_set, embed_files
from s4g.retrieval.evaluate import retrieval_metrics
from s4g.retrieval.mining import class_query_embeddings, similar_references

MODES = [("1 process, default threads", 1, None), ("1 process, 1 thread", 1, 1), ("2 processes, 1 thread each", 2, 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(t) -> dict:
    return {"best_s": t.best, "median_s": t.median, "rank0_cpu_s": t.cpu}


def _best(runs: list[dict]) -> dict:
    """One mode's figures: for each timed job, the round where it was fastest."""
    best = dict(runs[0])
    for job in ("evaluation", "evaluation_scoring_rank0", "mining", "mining_topk_rank0"):
        best[job] = min((r[job] for r in runs), key=lambda t: t["best_s"])
    return best


def _worker(rank: int, world: int, port: int, threads: int | None, args, out: str) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    if threads is not None:
        torch.set_num_threads(threads)
    env = D.setup("cpu")
    torch.manual_seed(0)
    model = build_model(args.backbone)
    ev, tr = load_eval("vigor-same", args.world), load_train("vigor-same", args.world)
    view = View(args.aerial_size, args.ground_size)
    common = dict(device="cpu", batch_size=args.batch_size, progress=False, env=env)
    k = min(128, tr.num_classes - 1)

    def evaluate():
        D.barrier(env)
        return evaluate_split(model, ev, protocol="sample4geo", view=view, **common)

    def mine():
        D.barrier(env)
        return mine_training_set(model, tr, k=k, view=view, **common)

    t_eval = timed(evaluate, args.repeats, warmup=1)
    t_mine = timed(mine, args.repeats, warmup=0)  # the model and loaders are warm by now
    # the embeddings rank 0 scores, then the scoring alone while the others wait
    q, r = embed_eval_set(model, ev, view, **common)
    tq = embed_files(model, tr.query_files, view, tr.query_kind, **common)
    tref = embed_files(model, tr.reference_files, view, "aerial", **common)
    if env.is_main:
        t_score = timed(lambda: retrieval_metrics(q, r, ev.query_labels, ev.reference_labels,
                                                  semi_positives=ev.semi_positives, device="cpu"), args.repeats)
        exclude = np.arange(tr.num_classes, dtype=np.int64)
        t_topk = timed(lambda: similar_references(class_query_embeddings(tq, tr.pair_class, tref), tref, k,
                                                  exclude, device="cpu"), args.repeats)
        Path(out).write_text(json.dumps({
            "threads_per_process": torch.get_num_threads(), "metrics": t_eval.result.metrics,
            "neighbours_sha256": hashlib.sha256(t_mine.result.tobytes()).hexdigest(),
            "evaluation": _summary(t_eval), "evaluation_scoring_rank0": _summary(t_score),
            "mining": _summary(t_mine), "mining_topk_rank0": _summary(t_topk),
        }))
    D.barrier(env)
    D.teardown(env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locations", type=int, default=400, help="synthetic VIGOR world size")
    ap.add_argument("--world", type=Path, default=None, help="an existing `s4g synth --layout vigor` folder")
    ap.add_argument("--backbone", default="convnext_micro_ls1")
    ap.add_argument("--aerial-size", type=int, default=128)
    ap.add_argument("--ground-size", type=int, nargs=2, default=[64, 128])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="turns of all modes; the best counts")
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/bench_dist_eval.json)")
    smoke = {"locations": 60, "aerial_size": 64, "ground_size": [32, 128], "batch_size": 8, "repeats": 1, "rounds": 1}
    args = parse(ap, smoke)
    with tempfile.TemporaryDirectory() as tmp:
        if args.world is None:
            args.world = Path(tmp) / "vigor"
            write_layout("vigor", args.world, locations=args.locations, seed=0, workers=os.cpu_count() or 1)
        ev, tr = load_eval("vigor-same", args.world), load_train("vigor-same", args.world)
        images = {"eval_queries": len(ev.query_files), "eval_references": len(ev.reference_files),
                  "train_queries": tr.num_pairs, "train_references": tr.num_classes}
        banner(**images, backbone=args.backbone, batch=args.batch_size)
        rounds: dict[str, list[dict]] = {name: [] for name, _, _ in MODES}
        for _ in range(args.rounds):
            for name, world, threads in MODES:
                path = Path(tmp) / f"{world}-{threads}.json"
                mp.spawn(_worker, args=(world, _free_port(), threads, args, str(path)), nprocs=world, join=True)
                rounds[name].append(json.loads(path.read_text()))
    results = {name: _best(runs) for name, runs in rounds.items()}
    base = results[MODES[0][0]]["evaluation"]["best_s"]
    print(f"best of {args.rounds} rounds x {args.repeats} repeats")
    rows = [(name, r["threads_per_process"], r["evaluation"]["best_s"], f"{base / r['evaluation']['best_s']:.2f}x",
             r["evaluation_scoring_rank0"]["best_s"], r["mining"]["best_s"], r["mining_topk_rank0"]["best_s"])
            for name, r in results.items()]
    table(["mode", "threads", "eval s", "vs 1 proc", "scoring s", "mining s", "top-k s"], rows)
    same = {json.dumps(r["metrics"], sort_keys=True) for r in results.values()}
    lists = {r["neighbours_sha256"] for r in results.values()}
    print(f"metrics equal in every mode: {len(same) == 1}; neighbour lists equal: {len(lists) == 1}")
    write_result("bench_dist_eval", {
        "images": images, "backbone": args.backbone, "aerial_size": args.aerial_size,
        "ground_size": args.ground_size, "batch_size": args.batch_size, "repeats": args.repeats,
        "rounds": args.rounds, "modes": results, "every_round": rounds,
        "metrics_equal": len(same) == 1, "neighbours_equal": len(lists) == 1,
    }, args.out)


if __name__ == "__main__":
    main()
