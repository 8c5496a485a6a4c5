"""Bench: what the safety checks cost. The training-image header check against decoding the
same images, and a verified checkpoint (digest + flush to disk) against a plain torch.save /
torch.load of the same content.

    python benches/bench_safety.py [--locations 1000] [--backbone convnext_base] [--dir DIR]

Images: a CVUSA-layout synthetic world at the release's sizes (750x750 aerial, 224x1232
panorama JPEGs), page-cached (a cold disk adds its seek time to both columns). Checkpoint:
the backbone's weights plus AdamW-shaped state (two tensors a weight), as a run's last.pt.
Writes benches/results/bench_safety.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from harness import banner, parse, table, timed, write_result

from s4g.app.synth.writer import write_layout
from s4g.data.registry import load_train
from s4g.model.checkpoint import read_checkpoint, save_checkpoint
from s4g.model.encoder import build_model
from s4g.pipeline.images import find_bad_images, load_image

CVUSA_TRAIN_IMAGES = 2 * 35_532  # panoramas + tiles of CVUSA's training split


def bench_images(folder: Path, locations: int) -> dict:
    write_layout("cvusa", folder, locations=locations, seed=0, size="real", workers=2)
    train = load_train("cvusa", folder)
    files = [*train.query_files, *train.reference_files]
    find_bad_images(files)  # page-cache the files for both timings
    header = timed(lambda: find_bad_images(files), repeats=3)
    one_thread = timed(lambda: find_bad_images(files, threads=1), repeats=3)
    sample = files[:: max(1, len(files) // 200)]
    decode = timed(lambda: [load_image(f) for f in sample], repeats=3)
    per = {"header": header.best / len(files), "header_1_thread": one_thread.best / len(files),
           "decode": decode.best / len(sample)}
    table(["images", "µs a file", f"CVUSA train ({CVUSA_TRAIN_IMAGES:,} files), s"],
          [[k, v * 1e6, v * CVUSA_TRAIN_IMAGES] for k, v in per.items()])
    return {"files": len(files), "seconds_per_file": per,
            "cvusa_train_estimate_s": {k: v * CVUSA_TRAIN_IMAGES for k, v in per.items()}}


def bench_checkpoint(folder: Path, backbone: str) -> dict:
    model = build_model(backbone)
    state = {"optimizer": {"state": {i: {"exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
                                     for i, p in enumerate(model.parameters())}}, "epoch": 1, "step": 10}
    plain = {"format": "s4g-checkpoint", "backbone": backbone, "model": model.state_dict(), "config": {}, **state}
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values()) * 3
    rows = {
        "torch.save": timed(lambda: torch.save(plain, folder / "plain.pt"), repeats=3),
        "save_checkpoint": timed(lambda: save_checkpoint(folder / "s4g.pt", model, {}, **state), repeats=3),
        "torch.load": timed(lambda: torch.load(folder / "plain.pt", weights_only=True), repeats=3),
        "read_checkpoint": timed(lambda: read_checkpoint(folder / "s4g.pt"), repeats=3),
    }
    table(["checkpoint", "s (best)", "s (median)"], [[k, t.best, t.median] for k, t in rows.items()])
    return {"backbone": backbone, "bytes": size,
            "seconds": {k: {"best": t.best, "median": t.median} for k, t in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=1000)
    parser.add_argument("--backbone", default="convnext_base")
    parser.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parse(parser, smoke={"locations": 20, "backbone": "convnext_micro"})
    banner(locations=args.locations, backbone=args.backbone)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        images = bench_images(Path(scratch) / "cvusa", args.locations)
        checkpoint = bench_checkpoint(Path(scratch), args.backbone)
    write_result("bench_safety", {"images": images, "checkpoint": checkpoint})


if __name__ == "__main__":
    main()
