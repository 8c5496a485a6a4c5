"""Do the timm backbones and heads learn? A DINOv2-S-shaped ViT (random init, 4 blocks of
width 64, patch 8) trained on the synthetic world with each head, and with MixVPR under
--train-blocks 2, LoRA and --chunk-size 4; R@1 after every epoch beside the colour-histogram
baseline of the same world. Writes benches/results/backbones_synthetic.json.

    python benches/check_backbones_synthetic.py [--epochs 12] [--locations 500] [--lr 1e-3]
        [--batch-size 32] [--jobs 4] [--only NAME ...] [--tag TAG]

--jobs runs that many trainings at once, one CPU thread each (their seconds then depend on
how many share the machine: the JSON records the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from s4g.app.synth.cache import ensure_world

VIT = ["--backbone", "timm/vit_small_patch14_dinov2", "--backbone-arg", "depth=4",
       "--backbone-arg", "embed_dim=64", "--backbone-arg", "num_heads=2", "--backbone-arg", "patch_size=8",
       "--no-pretrained"]
SIZES = ["--aerial-size", "64", "--ground-size", "32", "128"]
RUNS = {
    "pool": [],
    "cls": ["--head", "cls"],
    "gem": ["--head", "gem"],
    "mixvpr": ["--head", "mixvpr", "--head-arg", "in_h=4", "--head-arg", "in_w=4"],
    "salad": ["--head", "salad", "--head-arg", "num_clusters=8", "--head-arg", "cluster_dim=32",
              "--head-arg", "token_dim=32"],
}
# Partial fine-tuning, LoRA and the chunked step on the head that learns fastest here.
RUNS.update({f"mixvpr {option}": [*RUNS["mixvpr"], *option.split()]
             for option in ("--train-blocks 2", "--lora-rank 8", "--chunk-size 4")})


def _train(name: str, cmd: list[str], run: Path) -> dict:
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r.get("kind") == "eval"]
    base = next(r for r in lines if r.get("kind") == "colour_baseline")
    return {"command_options": RUNS[name], "R@1_by_epoch": [round(r["R@1"], 2) for r in evals],
            "colour_baseline_R@1": round(base["R@1"], 2),
            "above_baseline": evals[-1]["R@1"] > base["R@1"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--locations", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--tag", default="", help="kept beside other settings' results: NAME [TAG], _setup [TAG]")
    args = parser.parse_args()
    out_path = Path(__file__).parent / "results" / "backbones_synthetic.json"
    results: dict = {}
    work = Path(tempfile.mkdtemp(prefix="s4g-backbones-"))
    world = work / "world"
    # The world is written once before the runs start, so that parallel runs do not race for it.
    ensure_world(world, locations=args.locations, seed=0)
    names = [n for n in RUNS if not args.only or n in args.only]
    suffix = f" [{args.tag}]" if args.tag else ""
    setup = results["_setup" + suffix] = {"epochs": args.epochs, "locations": args.locations, "lr": args.lr,
                         "batch_size": args.batch_size, "jobs": args.jobs, "vit": VIT, "sizes": SIZES,
                         "load_avg_1min_at_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {}
        for name in names:
            run = work / name.replace(" ", "_").replace("-", "")
            cmd = [sys.executable, "-c", "from s4g.app.cli import main; main()", "train", "--dataset", "synthetic",
                   "--data-root", str(world), "--locations", str(args.locations), "--out", str(run),
                   "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
                   "--device", "cpu", *SIZES, *VIT, *RUNS[name]]
            futures[pool.submit(_train, name, cmd, run)] = name
        for future in as_completed(futures):
            name = futures[future]
            result = results[name + suffix] = future.result()
            setup["load_avg_1min_at_end"] = os.getloadavg()[0]
            print(f"{name + suffix:24s} R@1 {result['R@1_by_epoch']} colour baseline "
                  f"{result['colour_baseline_R@1']:.2f}", flush=True)
            # Merged into the file as it is now: another invocation (--tag) may have written it.
            out_path.parent.mkdir(exist_ok=True)
            merged = {**(json.loads(out_path.read_text()) if out_path.exists() else {}), **results}
            out_path.write_text(json.dumps(merged, indent=1) + "\n")


if __name__ == "__main__":
    main()
