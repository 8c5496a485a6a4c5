"""Training-step throughput: s4g's step against the reference implementation's recipe.

s4g: bf16 autocast where the GPU supports it (fp16 + GradScaler otherwise, fp32 on CPU),
channels-last tensors, the loss read back only every --log-every steps.
baseline (same run, same model and batch): fp16 autocast + GradScaler, contiguous NCHW
tensors, `loss.item()` after every step (the reference's loop; on CPU: fp32, NCHW, item()).
Random tensors stand in for images, so the figure is the model step alone.

    python benches/bench_train_step.py [--backbone convnext_base] [--batch-size 32]
        [--aerial-size 384] [--ground-size 140 768] [--steps 20] [--peak-tflops 989]
Each recipe is timed in --rounds alternating rounds, best round kept. Prints images/s, model
TFLOP/s and (with --peak-tflops, the GPU's dense bf16 peak) the share of peak;
writes benches/results/bench_train_step.json.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch
from harness import banner, parse, table, write_result
from torch.utils.flop_counter import FlopCounterMode

from s4g.loss import InfoNCE
from s4g.model import build_model
from s4g.runtime import mixed_precision
from s4g.train.step import TrainStep


def _setup(args, device, channels_last: bool):
    torch.manual_seed(0)
    model = build_model(args.backbone)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = TrainStep(model, InfoNCE()).to(device, memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    h, w = args.ground_size
    ground = torch.randn(args.batch_size, 3, h, w, device=device).contiguous(memory_format=fmt)
    aerial = torch.randn(args.batch_size, 3, args.aerial_size, args.aerial_size,
                         device=device).contiguous(memory_format=fmt)
    return net, opt, ground, aerial


def _time(args, device, *, recipe: str) -> float:
    """Seconds per step after warm-up."""
    ours = recipe == "s4g"
    net, opt, ground, aerial = _setup(args, device, channels_last=ours)
    if ours:
        autocast, scaler = mixed_precision(device)
    elif device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
        scaler = torch.amp.GradScaler("cuda")
    else:
        autocast, scaler = contextlib.nullcontext, torch.amp.GradScaler("cpu", enabled=False)
    running = torch.zeros((), device=device)

    def step(i: int) -> None:
        nonlocal running
        with autocast():
            loss = net(ground, aerial)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_value_(net.parameters(), 100.0)
        scaler.step(opt)
        scaler.update()
        if ours:
            running += loss.detach()
            if (i + 1) % args.log_every == 0:
                running.item()  # the one sync per log window
        else:
            loss.item()  # the reference reads the loss back every step

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / args.steps


def _step_flops(args, device) -> int:
    """FLOPs of one step, counted on 2 pairs and scaled to the batch: the count runs in float32,
    which at the paper's sizes would need twice the timed step's memory; the encoder's work is
    linear in the batch and the loss's B² term is negligible."""
    counted = argparse.Namespace(**{**vars(args), "batch_size": 2})
    net, _, ground, aerial = _setup(counted, device, channels_last=False)
    with FlopCounterMode(display=False) as counter:
        net(ground, aerial).backward()
    return counter.get_total_flops() * args.batch_size // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="convnext_base")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--aerial-size", type=int, default=384)
    ap.add_argument("--ground-size", type=int, nargs=2, default=[140, 768])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating repeats; the best counts")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/bench_train_step.json)")
    smoke = {"backbone": "convnext_micro", "batch_size": 2, "aerial_size": 64, "ground_size": [32, 128],
             "steps": 1, "warmup": 0, "rounds": 1, "log_every": 1}
    args = parse(ap, smoke)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    flops = _step_flops(args, device)
    banner(device=name, backbone=args.backbone, batch=args.batch_size, aerial=args.aerial_size,
           ground=args.ground_size, tflop_per_step=round(flops / 1e12, 3))
    # Alternate the recipes over several rounds and keep each one's best round: on a shared
    # machine the load changes between runs more than the recipes differ.
    best = {"baseline": float("inf"), "s4g": float("inf")}
    for _ in range(args.rounds):
        for recipe in best:
            best[recipe] = min(best[recipe], _time(args, device, recipe=recipe))
    rows = {}
    for recipe, sec in best.items():
        tflops = flops / sec / 1e12
        rows[recipe] = {"s_per_step": sec, "images_per_s": 2 * args.batch_size / sec,
                        "tflops": tflops,
                        "share_of_peak": tflops / args.peak_tflops if args.peak_tflops else None}
    table(["recipe", "ms/step", "images/s", "TFLOP/s", "% of peak"],
          [(recipe, 1e3 * r["s_per_step"], r["images_per_s"], r["tflops"],
            "" if r["share_of_peak"] is None else f"{100 * r['share_of_peak']:.1f}") for recipe, r in rows.items()])
    print(f"speed-up s4g / baseline: {rows['baseline']['s_per_step'] / rows['s4g']['s_per_step']:.2f}x")
    write_result("bench_train_step", {"args": vars(args), "device": name, "flops_per_step": flops, "results": rows},
                 args.out)


if __name__ == "__main__":
    main()
