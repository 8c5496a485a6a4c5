"""Do the timm backbones and heads learn? A DINOv2-S-shaped ViT (random init, 4 blocks of
width 64, patch 14) trained on the synthetic world with each head, with --train-blocks 2,
with LoRA and with --chunk-size 4; the last evaluation's R@1 beside the colour-histogram
baseline of the same world. Writes benches/results/backbones_synthetic.json.

    python benches/check_backbones_synthetic.py [--epochs 10] [--locations 1500] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIT = ["--backbone", "timm/vit_small_patch14_dinov2", "--backbone-arg", "depth=4",
       "--backbone-arg", "embed_dim=64", "--backbone-arg", "num_heads=2"]
RUNS = {
    "pool": [],
    "cls": ["--head", "cls"],
    "gem": ["--head", "gem"],
    "mixvpr": ["--head", "mixvpr", "--head-arg", "in_h=4", "--head-arg", "in_w=4"],
    "salad": ["--head", "salad", "--head-arg", "num_clusters=8", "--head-arg", "cluster_dim=32",
              "--head-arg", "token_dim=32"],
    "gem --train-blocks 2": ["--head", "gem", "--train-blocks", "2"],
    "gem --lora-rank 8": ["--head", "gem", "--lora-rank", "8"],
    "gem --chunk-size 4": ["--head", "gem", "--chunk-size", "4"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--locations", type=int, default=1500)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    out_path = Path(__file__).parent / "results" / "backbones_synthetic.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    work = Path(tempfile.mkdtemp(prefix="s4g-backbones-"))
    for name, extra in RUNS.items():
        if args.only and name not in args.only:
            continue
        run = work / name.replace(" ", "_").replace("-", "")
        cmd = [sys.executable, "-c", "from s4g.app.cli import main; main()", "train", "--dataset", "synthetic",
               "--data-root", str(work / "world"), "--locations", str(args.locations), "--out", str(run),
               "--epochs", str(args.epochs), "--aerial-size", "56", "--ground-size", "28", "112",
               "--device", "cpu", *VIT, *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in lines if r.get("kind") == "eval"]
        base = next(r for r in lines if r.get("kind") == "colour_baseline")
        results[name] = {"command_options": extra, "R@1_by_epoch": [round(r["R@1"], 2) for r in evals],
                         "colour_baseline_R@1": round(base["R@1"], 2),
                         "above_baseline": evals[-1]["R@1"] > base["R@1"],
                         "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name:24s} R@1 {results[name]['R@1_by_epoch']} colour baseline {base['R@1']:.2f}", flush=True)
        results["_setup"] = {"epochs": args.epochs, "locations": args.locations, "vit": VIT,
                             "sizes": "aerial 56, ground 28x112", "load_avg_1min": os.getloadavg()[0]}
        out_path.parent.mkdir(exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
