"""R@1 with s4g's neighbour lists against the released code's (`--lists released`).

The synthetic world of `s4g train --dataset synthetic` (CVUSA's layout: one panorama per
tile) is trained from scratch with the paper's schedule shape: GPS lists until the first
evaluation, mined (DSS) lists after each one. Each seed trains twice, once per kind of lists,
with everything else equal; the table gives the final and best test R@1 of each. gps_k >
neighbour_range, so the order of cutting a list to its range acts beside the GPS formula;
with one panorama per tile the last-panorama rule cannot (`--layout vigor` for that).

    python benches/bench_released_lists.py [--seeds 3] [--locations 300] [--epochs 4]
Writes benches/results/bench_released_lists.json (per seed and list kind, and the mean and
standard deviation across seeds of the difference, to judge it against the noise).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import banner, parse, table, write_result
from rich.console import Console

from s4g.app.jobs.train import run
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets


def train_once(root: Path, out: Path, lists: str, seed: int, args) -> dict:
    dataset = "synthetic" if args.layout == "cvusa" else "vigor-same"
    cfg = datasets.train_config(
        dataset, data_root=str(root), out=str(out), backbone="convnext_micro_ls1", pretrained=False,
        aerial_size=64, ground_size=(32, 128), batch_size=args.batch_size, epochs=args.epochs, sampling="dss",
        eval_every=args.eval_every, gps_k=args.gps_k, neighbour_range=args.neighbour_range,
        neighbour_select=args.neighbour_select, augment=False, workers=0, device="cpu", seed=seed,
        lists=lists, check_images=False, synth_locations=args.locations,
    )
    start = time.perf_counter()
    run(cfg, console=Console(quiet=True))
    seconds = time.perf_counter() - start
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    r1 = [e["R@1"] for e in evals if e.get("kind") == "eval"]
    return {"final_R@1": r1[-1], "best_R@1": max(r1), "R@1_per_eval": r1, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--layout", choices=("cvusa", "vigor"), default="cvusa")
    ap.add_argument("--locations", type=int, default=300, help="locations of the synthetic world")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--gps-k", type=int, default=64)
    ap.add_argument("--neighbour-range", type=int, default=16)
    ap.add_argument("--neighbour-select", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = parse(ap, smoke={"seeds": 1, "locations": 40, "epochs": 2, "eval_every": 1, "batch_size": 8,
                           "gps_k": 8, "neighbour_range": 4, "neighbour_select": 2})
    banner(seeds=args.seeds, locations=args.locations, epochs=args.epochs, eval_every=args.eval_every,
           gps_k=args.gps_k, neighbour_range=args.neighbour_range, neighbour_select=args.neighbour_select)
    runs: dict[str, list[dict]] = {"s4g": [], "released": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / args.layout
        if args.layout == "vigor":  # the synthetic dataset writes (then reuses) its own world
            write_layout("vigor", root, locations=args.locations, seed=0)
        for seed in range(args.seeds):
            for lists in runs:
                runs[lists].append(train_once(root, Path(tmp) / f"{lists}-{seed}", lists, seed, args))
    rows = []
    for seed in range(args.seeds):
        a, b = runs["s4g"][seed], runs["released"][seed]
        rows.append((seed, f"{a['final_R@1']:.2f}", f"{b['final_R@1']:.2f}", f"{a['best_R@1']:.2f}",
                     f"{b['best_R@1']:.2f}"))
    mean = {lists: float(np.mean([r["final_R@1"] for r in rs])) for lists, rs in runs.items()}
    diff = [a["final_R@1"] - b["final_R@1"] for a, b in zip(runs["s4g"], runs["released"])]
    rows.append(("mean", f"{mean['s4g']:.2f}", f"{mean['released']:.2f}", "", ""))
    sd = float(np.std(diff, ddof=1)) if len(diff) > 1 else None
    table(["seed", "final R@1 s4g", "final R@1 released", "best s4g", "best released"], rows)
    write_result("bench_released_lists", {
        "dataset": f"synthetic world, {args.layout} layout", "settings": vars(args), "runs": runs,
        "mean_final_R@1": mean, "s4g_minus_released_final_R@1": diff,
        "mean_difference": float(np.mean(diff)), "sd_difference": sd,
    }, args.out)


if __name__ == "__main__":
    main()
