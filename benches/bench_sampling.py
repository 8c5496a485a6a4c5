"""Sampling ablation on the synthetic world: random batches vs GPS vs GPS->DSS.

Each setting trains the `synthetic` preset (same world, epochs and seeds; only --sampling
changes) through s4g.app.jobs.train.run, and reads R@1 per epoch back from metrics.jsonl. The
colour-histogram baseline of the same test set is printed alongside, so the numbers can be
read honestly: from scratch, in miniature, hard negatives are not expected to help (neighbours
share much of a tile and the model has nothing to refine yet).

    python benches/bench_sampling.py [--seeds 0 1 2] [--epochs N] [--locations N]
Writes benches/results/bench_sampling.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from harness import banner, parse, table, write_result
from rich.console import Console

from s4g.app.jobs.train import run
from s4g.data import registry as datasets

SAMPLINGS = ("random", "gps", "dss")


def _curve(run_dir: Path) -> tuple[list[float], float | None]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [r["R@1"] for r in lines if r.get("kind") == "eval"]
    base = [r["R@1"] for r in lines if r.get("kind") == "colour_baseline"]
    return curve, (base[0] if base else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=None, help="default: the synthetic preset's")
    ap.add_argument("--locations", type=int, default=None, help="default: the synthetic preset's")
    ap.add_argument("--samplings", nargs="+", default=list(SAMPLINGS), choices=SAMPLINGS)
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/bench_sampling.json)")
    args = parse(ap, smoke={"seeds": [0], "epochs": 1, "locations": 100, "samplings": ["random", "dss"]})
    banner(seeds=args.seeds, samplings=args.samplings)

    base = datasets.train_config("synthetic", epochs=args.epochs, synth_locations=args.locations,
                                 device="cpu")
    quiet = Console(quiet=True)
    results: dict[str, list[dict]] = {s: [] for s in args.samplings}
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for sampling in args.samplings:
                cfg = dataclasses.replace(base, sampling=sampling, seed=seed,
                                          out=os.path.join(tmp, f"{sampling}-{seed}"))
                t0 = time.perf_counter()
                run_dir = run(cfg, console=quiet)
                wall = time.perf_counter() - t0
                curve, baseline = _curve(run_dir)
                results[sampling].append({"seed": seed, "r1_curve": curve, "final_r1": curve[-1],
                                          "wall_s": round(wall, 1)})
                print(f"seed {seed} {sampling:6s} R@1 per epoch {[round(v, 1) for v in curve]} "
                      f"({wall:.0f} s)", flush=True)

    print(f"\nsynthetic world: {base.synth_locations} locations, {base.epochs} epochs, "
          f"backbone {base.backbone}, batch {base.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"colour-histogram baseline R@1: {baseline:.2f}")
    summary, rows = {}, []
    for sampling, runs in results.items():
        finals = [r["final_r1"] for r in runs]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        summary[sampling] = {"mean_final_r1": statistics.fmean(finals), "sd": sd}
        rows.append((sampling, statistics.fmean(finals), sd, str([round(v, 2) for v in finals])))
    table(["sampling", "final R@1 mean", "sd", "per seed"], rows)
    write_result("bench_sampling", {
        "config": {k: v for k, v in dataclasses.asdict(base).items() if k not in ("out", "data_root")},
        "seeds": args.seeds, "colour_baseline_r1": baseline, "results": results, "summary": summary,
    }, args.out)


if __name__ == "__main__":
    main()
