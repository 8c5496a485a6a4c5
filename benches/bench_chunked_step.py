"""Peak memory and time per training step: the chunked step (gradient cache, `--chunk-size`)
against the plain step, for one batch of pairs of random images.

Each run is a batch size and a chunk ("plain": the whole batch in one forward pass; N: the
chunked step in chunks of N pairs, N = batch included, which shows the cost of the extra
forward pass alone). It runs s4g's own step (s4g.app.jobs.train.step.train_step: AdamW, autocast and
loss scaling as training uses them on that device, channels-last) for --warmup steps, then
--steps timed ones, and reports
  held:  memory held between steps (weights, gradients, AdamW moments, the batch's images),
  peak:  the highest memory during the timed steps, and step = peak - held, the step's own
         memory (activations and temporaries), which the chunk size bounds;
  s/step: the best timed step (wall clock), and its CPU seconds (all threads of the
         process; on a shared CPU with --threads 1 the steadier measure of the work).
CUDA: torch.cuda.memory_allocated / max_memory_allocated, all runs in this process. With
--caps-gib, also `--chunk-size auto` under each memory cap (a smaller GPU, emulated with
torch.cuda.set_per_process_memory_fraction): the chunk it chooses, its peak and its time.
CPU: resident memory (VmRSS; VmHWM after resetting it through /proc/self/clear_refs), each
run in a fresh process whose malloc returns freed blocks at once (MALLOC_MMAP_THRESHOLD_).

    python benches/bench_chunked_step.py                      # the device's default configs
    python benches/bench_chunked_step.py --configs paper --runs 128:plain 128:8 128:32 128:128
Configs: paper (ConvNeXt-B, aerial 384, ground 140x768: CVUSA/CVACT as the paper trains them),
vigor (ConvNeXt-B, 384 and 384x768), reduced (ConvNeXt-B at half those sizes), cpu
(ConvNeXt-T, 64 and 32x128) and synthetic (the synthetic preset: convnext_micro_ls1, 64 and
32x128). Defaults: paper and reduced on CUDA, synthetic and cpu on the CPU.
Writes benches/results/bench_chunked_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from harness import banner, parse, table, write_result

from s4g.app.jobs.train.step import Parts, TrainStep, train_step
from s4g.config import TrainConfig
from s4g.distributed import DistEnv
from s4g.errors import UserInputError
from s4g.model.chunksize import plan_chunks
from s4g.model.encoder import build_model
from s4g.model.loss import InfoNCE
from s4g.runtime import mixed_precision

CONFIGS = {  # name -> (backbone, aerial side, ground (H, W)), pixels
    "paper": ("convnext_base", 384, (140, 768)),
    "vigor": ("convnext_base", 384, (384, 768)),
    "reduced": ("convnext_base", 192, (70, 384)),
    "cpu": ("convnext_tiny", 64, (32, 128)),
    "synthetic": ("convnext_micro_ls1", 64, (32, 128)),
}
GIB = 2**30


def _parts(backbone: str, device: torch.device, chunk: int | None) -> Parts:
    torch.manual_seed(0)
    model = build_model(backbone).to(device, memory_format=torch.channels_last).train()
    loss_fn = InfoNCE().to(device)
    optimizer = torch.optim.AdamW([*model.parameters(), loss_fn.logit_scale], lr=1e-4)
    autocast, scaler = mixed_precision(device)
    return Parts(model, loss_fn, optimizer, scaler, autocast, TrainStep(model, loss_fn), chunk=chunk)


def _images(batch: int, aerial: int, ground: tuple[int, int], device: torch.device):
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(batch, 3, *ground, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    a = torch.randn(batch, 3, aerial, aerial, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    return g, a


def _memory(device: torch.device) -> tuple[int, int]:
    """(bytes held now, peak bytes since the last _reset_peak)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def measure(parts: Parts, ground: torch.Tensor, aerial: torch.Tensor, *, warmup: int, steps: int) -> dict:
    """Held / peak / step memory (GiB) and the best seconds per step of train_step on the batch."""
    device = ground.device
    params = [p for g in parts.optimizer.param_groups for p in g["params"]]
    for _ in range(warmup):  # the first step also allocates AdamW's moments
        train_step(parts, ground, aerial, params, 100.0, device)
    held, _ = _memory(device)
    _reset_peak(device)
    times = []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = train_step(parts, ground, aerial, params, 100.0, device)
        loss.item()  # waits for the device
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    _, peak = _memory(device)
    wall, cpu = min(times)
    return {"held_gib": held / GIB, "peak_gib": peak / GIB, "step_gib": (peak - held) / GIB,
            "s_per_step": wall, "cpu_s_per_step": cpu, "loss": float(loss)}


def _run_one(config: str, batch: int, chunk: str, device: torch.device, args) -> dict:
    backbone, aerial, ground = CONFIGS[config]
    size = None if chunk == "plain" else int(chunk)
    parts = g = a = None
    try:
        parts = _parts(backbone, device, size)
        g, a = _images(batch, aerial, ground, device)
        return measure(parts, g, a, warmup=args.warmup, steps=args.steps)
    except torch.OutOfMemoryError:
        return {"out_of_memory": True}
    finally:
        parts = g = a = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _run_capped(config: str, batch: int, cap_gib: float, device: torch.device, args) -> dict:
    """--chunk-size auto under a memory cap of cap_gib: the plan, then the step it chose."""
    backbone, aerial, ground = CONFIGS[config]
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total), device)
    parts = g = a = None
    try:
        parts = _parts(backbone, device, None)
        cfg = TrainConfig(dataset="synthetic", backbone=backbone, batch_size=batch, aerial_size=aerial,
                          ground_size=ground, chunk_size="auto")
        t0 = time.perf_counter()
        plan = plan_chunks(cfg, DistEnv(0, 1, 0, device), parts.model, parts.optimizer, parts.autocast)
        probe_s = time.perf_counter() - t0
        parts.chunk = plan.size
        g, a = _images(batch, aerial, ground, device)
        return {"chunk": plan.size or "plain", "probe_s": probe_s, "note": plan.note,
                **measure(parts, g, a, warmup=args.warmup, steps=args.steps)}
    except (torch.OutOfMemoryError, UserInputError):  # the latter: not even one pair fits
        return {"out_of_memory": True}
    finally:
        parts = g = a = None
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def _in_fresh_process(config: str, run: str, args) -> dict:
    # A clean memory peak per run: each run in its own interpreter, malloc returning large
    # freed blocks to the system at once so that resident memory follows live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    cmd = [sys.executable, __file__, "--one", config, run, "--device", "cpu", "--threads", str(args.threads),
           "--warmup", str(args.warmup), "--steps", str(args.steps)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    ap.add_argument("--runs", nargs="+", default=["128:plain", "128:8", "128:32", "128:128", "256:32"],
                    help="BATCH:CHUNK, CHUNK a number of pairs or plain")
    ap.add_argument("--caps-gib", nargs="*", type=float, default=None,
                    help="CUDA: also --chunk-size auto under these memory caps (default 24 12)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2 on CUDA, 1 on the CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on CUDA, 2 on the CPU)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default torch's); on a shared CPU, 1 keeps OpenMP barriers from "
                         "dominating the many small operations of small chunks")
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "BATCH:CHUNK"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    smoke = {"configs": ["synthetic"], "runs": ["8:plain", "8:4"], "warmup": 0, "steps": 1, "caps_gib": []}
    args = parse(ap, smoke)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    args.warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    args.steps = args.steps if args.steps is not None else (5 if cuda else 2)
    if args.one:  # child process of a CPU run: one JSON line
        batch, chunk = args.one[1].split(":")
        print(json.dumps(_run_one(args.one[0], int(batch), chunk, device, args)))
        return
    configs = args.configs or (["paper", "reduced"] if cuda else ["synthetic", "cpu"])
    caps = (args.caps_gib if args.caps_gib is not None else [24.0, 12.0]) if cuda else []
    banner(device=device, torch_threads=torch.get_num_threads(), warmup=args.warmup, steps=args.steps)
    results = []
    for config in configs:
        backbone, aerial, ground = CONFIGS[config]
        rows = []
        for run in args.runs:
            batch, chunk = run.split(":")
            r = _run_one(config, int(batch), chunk, device, args) if cuda else _in_fresh_process(config, run, args)
            results.append({"config": config, "batch": int(batch), "chunk": chunk, **r})
            rows.append(_row(f"{batch} pairs, chunk {chunk}", r))
        for cap in caps if config in ("paper", "vigor") else []:
            batch = int(args.runs[0].split(":")[0])
            r = _run_capped(config, batch, cap, device, args)
            results.append({"config": config, "batch": batch, "cap_gib": cap, **r})
            rows.append(_row(f"{batch} pairs, auto under {cap:g} GiB -> {r.get('chunk', '-')}", r))
        print(f"\n{config}: {backbone}, aerial {aerial}x{aerial}, ground {ground[0]}x{ground[1]}")
        table(["run", "held GiB", "step GiB", "peak GiB", "s/step", "CPU s/step"], rows)
    write_result("bench_chunked_step", {"device": str(device), "warmup": args.warmup, "steps": args.steps,
                                        "configs": {c: CONFIGS[c] for c in configs}, "results": results},
                 out=args.out)


def _row(label: str, r: dict) -> list:
    if r.get("out_of_memory"):
        return [label, "out of memory", "", "", "", ""]
    return [label, r["held_gib"], r["step_gib"], r["peak_gib"], r["s_per_step"], r["cpu_s_per_step"]]


if __name__ == "__main__":
    main()
