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

    python benches/bench_train_step.py --backbones [--batch-size 2] [--aerial-size 56]
        [--ground-size 28 112] [--steps 3]
compares encoders instead (ConvNeXt-B, DINOv2-S/B with heads, --train-blocks 4, LoRA): the
s4g step's seconds per step and peak memory at the given (small) sizes, rounded to a ViT's
patch, each variant in a process of its own (CPU: the process's peak resident set; GPU: the
peak allocated by torch), and FLOPs per pair (forward + backward, one ground and one aerial
image) counted on the meta device at the paper's sizes (ConvNeXt 384 and 140x768; patch-14 ViTs
392 and 140x770, the nearest multiples of 14; patch-16 ViTs 384 and 144x768), also for the
COUNTED encoders. Writes benches/results/bench_train_step_backbones.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import resource
import subprocess
import sys
import time

import torch
from harness import banner, parse, table, write_result
from torch.utils.flop_counter import FlopCounterMode

from s4g.app.jobs.train.step import TrainStep, param_groups
from s4g.model.encoder import build_model, set_trainable
from s4g.model.loss import InfoNCE
from s4g.runtime import mixed_precision

_DINO_S, _DINO_B = "timm/vit_small_patch14_dinov2", "timm/vit_base_patch14_dinov2"
# label -> (backbone, head, --train-blocks, --lora-rank)
VARIANTS = {
    "ConvNeXt-B": ("convnext_base", "pool", None, 0),
    "DINOv2-S": (_DINO_S, "pool", None, 0),
    "DINOv2-B": (_DINO_B, "pool", None, 0),
    "DINOv2-B + SALAD": (_DINO_B, "salad", None, 0),
    "DINOv2-B + MixVPR": (_DINO_B, "mixvpr", None, 0),
    "DINOv2-B --train-blocks 4": (_DINO_B, "pool", 4, 0),
    "DINOv2-B --lora-rank 16": (_DINO_B, "pool", None, 16),
}
# Counted only (parameters, FLOPs per pair), not timed: the docs' table of encoders.
COUNTED = {
    "DINOv2-S reg4": ("timm/vit_small_patch14_reg4_dinov2", "pool", None, 0),
    "DINOv2-L": ("timm/vit_large_patch14_dinov2", "pool", None, 0),
    "DINOv3-S": ("timm/vit_small_patch16_dinov3", "pool", None, 0),
    "DINOv3-B": ("timm/vit_base_patch16_dinov3", "pool", None, 0),
    "DINOv3-B + SALAD": ("timm/vit_base_patch16_dinov3", "salad", None, 0),
    "DINOv3-L": ("timm/vit_large_patch16_dinov3", "pool", None, 0),
    "ConvNeXt-B + GeM": ("convnext_base", "gem", None, 0),
}
PAPER_SIZES = {14: (392, (140, 770)), 16: (384, (144, 768)), None: (384, (140, 768))}


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


def _variant_model(label: str):
    backbone, head, train_blocks, lora = {**VARIANTS, **COUNTED}[label]
    model = build_model(backbone, head=head, lora_rank=lora)
    set_trainable(model, train_blocks)
    return model


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    # torch.utils.flop_counter's own formula ignores `groups` in the backward pass, which counts a
    # depthwise convolution's (ConvNeXt's 7x7) gradients 65-fold at 64 groups; each of the input
    # and weight gradients of a (not transposed) convolution costs what its forward pass costs.
    output_mask = args[-1]
    forward = 2 * math.prod(grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _pair_flops(label: str) -> tuple[int, int]:
    """(FLOPs of forward + backward of one ground and one aerial image at the paper's sizes,
    trained parameters), counted on the meta device: no memory, no arithmetic."""
    with torch.device("meta"):
        model = _variant_model(label)
        aerial, (h, w) = PAPER_SIZES[model.patch_size]
        ground, tile = torch.randn(1, 3, h, w), torch.randn(1, 3, aerial, aerial)
    fixed = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=fixed) as counter:
        (model(ground).sum() + model(tile).sum()).backward()
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters() if p.requires_grad)


def _one_variant(args, device) -> dict:
    # Runs in a process of its own, so that the peak memory is this variant's alone.
    label = args.one
    torch.manual_seed(0)
    model = _variant_model(label)
    loss_fn = InfoNCE()
    net = TrainStep(model, loss_fn).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(param_groups(model, loss_fn), lr=1e-4)
    autocast, scaler = mixed_precision(device)
    patch = model.patch_size or 1
    h, w, a = (max(patch, round(v / patch) * patch) for v in (*args.ground_size, args.aerial_size))
    ground = torch.randn(args.batch_size, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    aerial = torch.randn(args.batch_size, 3, a, a, device=device).contiguous(memory_format=torch.channels_last)
    params = [p for g in opt.param_groups for p in g["params"]]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = net(ground, aerial)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_value_(params, 100.0)
        scaler.step(opt)
        scaler.update()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"s_per_step": min(times), "peak_memory_bytes": peak, "sizes": [a, [h, w]],
            "parameters": sum(p.numel() for p in model.parameters()), "embed_dim": model.embed_dim}


def compare_backbones(args, device, name: str) -> None:
    banner(device=name, batch=args.batch_size, aerial=args.aerial_size, ground=args.ground_size,
           steps=args.steps, memory="peak RSS of the process" if device.type == "cpu" else "peak CUDA allocated")
    rows = {}
    for label in args.only or VARIANTS:
        cmd = [sys.executable, __file__, "--one", label, "--device", args.device, "--batch-size",
               str(args.batch_size), "--aerial-size", str(args.aerial_size), "--ground-size",
               *map(str, args.ground_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["flops_per_pair_paper_sizes"], row["trained_parameters"] = _pair_flops(label)
        rows[label] = row
        print(f"  {label}: {row['s_per_step']:.3f} s/step", flush=True)
    counted = {}
    for label in COUNTED:
        flops, params = _pair_flops(label)
        counted[label] = {"flops_per_pair_paper_sizes": flops, "parameters": params}
    full = rows.get("DINOv2-B")
    table(["encoder", "params (M)", "trained (M)", "D", "s/step", "peak MiB", "GFLOP/pair @paper", "vs DINOv2-B step"],
          [(label, r["parameters"] / 1e6, r["trained_parameters"] / 1e6, r["embed_dim"], r["s_per_step"],
            r["peak_memory_bytes"] / 2**20, r["flops_per_pair_paper_sizes"] / 1e9,
            f"{r['s_per_step'] / full['s_per_step']:.2f}x" if full else "") for label, r in rows.items()])
    table(["encoder (counted only)", "params (M)", "GFLOP/pair @paper"],
          [(label, r["parameters"] / 1e6, r["flops_per_pair_paper_sizes"] / 1e9) for label, r in counted.items()])
    write_result("bench_train_step_backbones", {"args": vars(args), "device": name, "results": rows,
                                                "counted": counted, "paper_sizes": {str(k): v for k, v in
                                                                                    PAPER_SIZES.items()}}, args.out)


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
    ap.add_argument("--backbones", action="store_true", help="compare the encoders (VARIANTS) instead")
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None,
                    help="with --backbones: time these variants only (all are counted)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # one variant, in a child process
    smoke = {"backbone": "convnext_micro", "batch_size": 2, "aerial_size": 64, "ground_size": [32, 128],
             "steps": 1, "warmup": 0, "rounds": 1, "log_every": 1}
    args = parse(ap, smoke)
    device = torch.device(args.device)
    if args.one is not None:
        print(json.dumps(_one_variant(args, device)))
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    if args.backbones:
        compare_backbones(args, device, name)
        return
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
