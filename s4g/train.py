"""The training loop: sampler -> loader -> AMP step -> schedule -> eval/mine -> checkpoint.

`run(cfg)` trains one run directory (config.json, metrics.jsonl, last.pt, best.pt). Under
torchrun every rank walks the same global batches and takes its own slice of each; rank 0
alone evaluates, mines, writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from s4g import distributed as D
from s4g import schedule
from s4g.config import TrainConfig
from s4g.data.dataset import collate_pairs
from s4g.errors import UserInputError
from s4g.fileio import atomic_path, save_json
from s4g.loss import InfoNCE
from s4g.model import build_model, load_state_strict, read_checkpoint, save_checkpoint
from s4g.train_data import RunData, check_config, load_run_data, resolve_data_root, run_dir_for

# Keys that must agree between a checkpoint and the run resuming from it.
RESUME_KEYS = ("dataset", "backbone", "batch_size", "aerial_size", "ground_size")


class TrainStep(nn.Module):
    """Encoder + loss in one module, so DDP also averages the temperature's gradient."""

    def __init__(self, model: nn.Module, loss_fn: InfoNCE) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, ground: torch.Tensor, aerial: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model(ground), self.model(aerial))


@dataclasses.dataclass
class RunState:
    """What changes during a run and is saved with every checkpoint."""

    epoch: int = 0  # last completed epoch
    step: int = 0  # optimizer steps taken
    best_r1: float = -1.0
    neighbours: np.ndarray | None = None  # (C, K) int64 current sampler neighbour lists


@dataclasses.dataclass
class Parts:
    """The objects one run trains: encoder, loss (with the temperature), optimizer, AMP."""

    model: nn.Module
    loss_fn: InfoNCE
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Any
    net: nn.Module  # TrainStep, DDP-wrapped when distributed


class MetricsLog:
    """metrics.jsonl, rewritten atomically on every record (it stays small)."""

    def __init__(self, path: Path, keep_upto_epoch: int | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if keep_upto_epoch is not None and path.is_file():
            # Resuming: drop lines of epochs the interrupted run had not checkpointed.
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            self.records = [r for r in lines if r.get("epoch", 0) <= keep_upto_epoch]

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """asdict(cfg) with JSON types only (ground_size as a list), as config.json holds it."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def amp_setup(device: torch.device) -> tuple[Any, torch.amp.GradScaler]:
    """(autocast context factory, GradScaler): bf16 where the GPU has it, else fp16 with
    loss scaling; plain fp32 on CPU (scaler disabled, so one step code serves all three)."""
    if device.type != "cuda":
        return contextlib.nullcontext, torch.amp.GradScaler("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def run(
    cfg: TrainConfig,
    *,
    resume: str | None = None,
    stop_after_epoch: int | None = None,
    console: Console | None = None,
) -> Path:
    """Train per `cfg`; return the run directory.

    resume: a run directory or checkpoint to continue from (same dataset, backbone, batch
      size and image sizes), restoring weights, optimizer, scaler, step, sampler state and RNG.
    stop_after_epoch: end after that epoch as if interrupted (resume tests, time limits).
    Raises UserInputError for anything the user can fix, including a GPU out of memory.
    """
    check_config(cfg)
    env = D.setup(cfg.device)
    try:
        return _run(cfg, env, resume, stop_after_epoch, console or Console())
    except torch.OutOfMemoryError:
        raise UserInputError(
            f"the GPU ran out of memory at --batch-size {cfg.batch_size} "
            f"({cfg.batch_size // env.world_size} pairs per process, images "
            f"{cfg.aerial_size}px aerial, {cfg.ground_size[0]}x{cfg.ground_size[1]} ground); "
            "lower --batch-size, or spread the batch over more GPUs with torchrun"
        ) from None
    finally:
        D.teardown(env)


def resume_path(resume: str) -> Path:
    """The checkpoint --resume names: a file, or a run directory's last.pt."""
    path = Path(resume)
    return path / "last.pt" if path.is_dir() else path


def _resume_checkpoint(resume: str) -> tuple[Path, dict[str, Any]]:
    path = resume_path(resume)
    return path, read_checkpoint(path)


def _check_resume(cfg: TrainConfig, ckpt_cfg: dict[str, Any], path: Path) -> None:
    mine = dataclasses.asdict(cfg)
    diff = []
    for key in RESUME_KEYS:
        a, b = mine.get(key), ckpt_cfg.get(key)
        a, b = (list(v) if isinstance(v, tuple) else v for v in (a, b))
        if a != b:
            diff.append(f"{key}: {b!r} in the checkpoint vs {a!r} now")
    if diff:
        raise UserInputError(f"--resume {path}: the checkpoint is from another configuration (" + "; ".join(diff) + ")")


def _prepare(cfg: TrainConfig, env: D.DistEnv, resume: str | None) -> tuple[TrainConfig, dict | None]:
    """cfg with absolute data_root and out (same on every rank), and the resume checkpoint."""
    if env.distributed and cfg.skip_bad_images:
        # A dropped pair would give the ranks unequal batch shares, which the gather cannot take.
        raise UserInputError("--skip-bad-images works in single-process runs only; fix or remove the bad images")
    ckpt = None
    if resume is not None:
        ckpt_path, ckpt = _resume_checkpoint(resume)
        _check_resume(cfg, ckpt["config"], ckpt_path)
        if cfg.out is None:
            cfg = dataclasses.replace(cfg, out=str(ckpt_path.parent))
    cfg = resolve_data_root(cfg, env)
    out = D.broadcast_from_main(env, str(run_dir_for(cfg)) if env.is_main else None)
    return dataclasses.replace(cfg, out=out), ckpt


def _build(cfg: TrainConfig, env: D.DistEnv, ckpt: dict | None) -> tuple[Parts, RunState]:
    """Fresh (seeded) or resumed model, loss, optimizer and scaler, on the run's device."""
    schedule.seed_all(cfg.seed)
    model = build_model(cfg.backbone, pretrained=cfg.pretrained, weights_file=cfg.weights)
    loss_fn = InfoNCE(cfg.label_smoothing, rank=env.rank, world_size=env.world_size)
    optimizer = torch.optim.AdamW(schedule.param_groups([model, loss_fn], cfg.weight_decay), lr=cfg.lr)
    autocast, scaler = amp_setup(env.device)
    state = RunState()
    if ckpt is not None:
        state = _restore(ckpt, model, loss_fn, optimizer, scaler)
    model.to(env.device, memory_format=torch.channels_last)
    loss_fn.to(env.device)
    _optimizer_to(optimizer, env.device)
    net: nn.Module = TrainStep(model, loss_fn)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    return Parts(model, loss_fn, optimizer, scaler, autocast, net), state


def _run(cfg: TrainConfig, env: D.DistEnv, resume: str | None, stop: int | None, console: Console) -> Path:
    cfg, ckpt = _prepare(cfg, env, resume)
    out = Path(cfg.out)
    data = load_run_data(cfg, with_eval=env.is_main)
    parts, state = _build(cfg, env, ckpt)
    log = None
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "config.json", config_dict(cfg))
        log = MetricsLog(out / "metrics.jsonl", keep_upto_epoch=state.epoch if ckpt else None)
        if ckpt is None:
            _baseline(data, log, console)
            _evaluate(parts.model, data, cfg, env, log, console, epoch=0)
    D.barrier(env)

    steps_per_epoch = max(1, data.train.num_pairs // cfg.batch_size)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if ckpt is not None and epoch == state.epoch + 1:
            schedule.set_rng_state(ckpt["rng"])
        state.neighbours = _epoch_neighbours(cfg, data, state, epoch)
        loader = _loader(cfg, data, state, epoch, env)
        state.step = train_one_epoch(parts, loader, env, cfg, epoch=epoch, step=state.step,
                                     steps_per_epoch=steps_per_epoch, log=log, console=console)
        state.epoch = epoch
        _after_epoch(cfg, data, env, parts, state, log, console)
        if stop is not None and epoch >= stop:
            break
    if env.is_main and state.best_r1 >= 0:
        base = f" (colour-histogram baseline {data.baseline['R@1']:.2f})" if data.baseline else ""
        console.print(f"best {cfg.eval_split} R@1 {state.best_r1:.2f}{base}; checkpoints in {out}")
    return out


def _restore(ckpt: dict[str, Any], model, loss_fn, optimizer, scaler) -> RunState:
    load_state_strict(model, ckpt["model"], source="--resume checkpoint")
    loss_fn.load_state_dict(ckpt["loss"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    nb = ckpt.get("neighbours")
    return RunState(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        best_r1=float(ckpt["best_r1"]),
        neighbours=None if nb is None else nb.numpy(),
    )


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    # A resumed optimizer state arrives on the CPU; Adam's moments must live with the params.
    for per_param in optimizer.state.values():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and key != "step":
                per_param[key] = value.to(device)


def _epoch_neighbours(cfg: TrainConfig, data: RunData, state: RunState, epoch: int) -> np.ndarray | None:
    """Neighbour lists the packer uses this epoch: None (random), GPS, or the mined ones."""
    if cfg.sampling == "random":
        return None
    if cfg.sampling == "gps" or epoch == 1 or state.neighbours is None:
        return data.gps_neighbours(cfg.gps_k)
    return state.neighbours


def _loader(cfg: TrainConfig, data: RunData, state: RunState, epoch: int, env: D.DistEnv) -> DataLoader:
    from s4g.sampling import pack_batches

    batches = pack_batches(data.train.pair_class, state.neighbours, cfg.batch_size,
                           neighbour_select=cfg.neighbour_select, seed=cfg.seed + epoch)
    if len(batches) == 0:
        raise UserInputError(
            f"--batch-size {cfg.batch_size}: no full batch could be packed from "
            f"{data.train.num_pairs} training pairs; lower the batch size"
        )
    share = D.rank_share(batches, env)
    # Augmentation is a pure function of (seed, epoch, pair index): no worker or RNG state
    # leaks into it, so a resumed epoch sees the same images as an uninterrupted one.
    data.pairs.set_epoch(epoch)
    collate = collate_pairs if cfg.skip_bad_images else None
    return DataLoader(data.pairs, batch_sampler=share.tolist(), num_workers=cfg.workers,
                      pin_memory=env.device.type == "cuda", collate_fn=collate)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
        TimeRemainingColumn(), console=console, transient=False,
    )


def train_step(parts: Parts, ground: torch.Tensor, aerial: torch.Tensor, params: list[torch.Tensor],
               clip: float, device: torch.device) -> torch.Tensor:
    """One optimizer step on a batch of pairs; returns the detached loss, left on the device
    (no host sync here, except fp16's inf check inside scaler.step)."""
    ground = ground.to(device, non_blocking=True, memory_format=torch.channels_last)
    aerial = aerial.to(device, non_blocking=True, memory_format=torch.channels_last)
    with parts.autocast():
        loss = parts.net(ground, aerial)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.unscale_(parts.optimizer)  # clip the true gradients, not the scaled ones
    nn.utils.clip_grad_value_(params, clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.loss_fn.clamp_()
    return loss.detach()


def train_one_epoch(parts: Parts, loader: DataLoader, env: D.DistEnv, cfg: TrainConfig, *,
                    epoch: int, step: int, steps_per_epoch: int, log: MetricsLog | None,
                    console: Console) -> int:
    """One pass over `loader`; returns the optimizer step count after it.

    The loss is read back to the host only every cfg.log_every steps (the one sync point of
    the loop besides fp16's inf check in scaler.step); lr is set from the pure lr_at(step).
    """
    optimizer = parts.optimizer
    parts.net.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    running = torch.zeros((), device=env.device)
    window, t0 = 0, time.perf_counter()
    progress = _progress(console) if env.is_main else None
    ctx = progress if progress is not None else contextlib.nullcontext()
    with ctx:
        task = progress.add_task(f"epoch {epoch}/{cfg.epochs}", total=len(loader), loss="-", speed="-") if progress else None
        for i, (ground, aerial, _) in enumerate(loader):
            if ground.shape[0] < 2:  # --skip-bad-images emptied the batch: nothing to contrast
                continue
            lr = schedule.lr_at(step, base_lr=cfg.lr, warmup_steps=warmup, total_steps=total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            running += train_step(parts, ground, aerial, params, cfg.clip_grad, env.device)
            window += 1
            step += 1
            if step % cfg.log_every == 0 or i + 1 == len(loader):
                if env.distributed:
                    torch.distributed.all_reduce(running)
                    running /= env.world_size
                value = running.item() / window  # sync point: once per log window
                speed = 2 * cfg.batch_size * window / (time.perf_counter() - t0)
                if log is not None:
                    log.add({"epoch": epoch, "step": step, "loss": value, "lr": lr,
                             "scale": float(parts.loss_fn.scale.detach()),  # (same window)
                             "images_per_s": speed})
                if progress is not None:
                    progress.update(task, loss=f"{value:.3f}", speed=f"{speed:.0f}")
                running.zero_()
                window, t0 = 0, time.perf_counter()
            if progress is not None:
                progress.advance(task)
    return step


def _after_epoch(cfg: TrainConfig, data: RunData, env: D.DistEnv, parts: Parts, state: RunState,
                 log: MetricsLog | None, console: Console) -> None:
    """Evaluate, re-mine and checkpoint as the schedule says (rank 0 does the work)."""
    if env.is_main and schedule.evaluates_after(state.epoch, cfg.epochs, cfg.eval_every):
        r1 = _evaluate(parts.model, data, cfg, env, log, console, epoch=state.epoch)
        if r1 > state.best_r1:
            state.best_r1 = r1
            _save(Path(cfg.out) / "best.pt", cfg, parts, state)
    if cfg.sampling == "dss" and schedule.mines_after(state.epoch, cfg.epochs, cfg.eval_every):
        mined = _mine(parts.model, data, cfg, env) if env.is_main else None
        state.neighbours = D.broadcast_from_main(env, mined)
    if env.is_main:
        _save(Path(cfg.out) / "last.pt", cfg, parts, state)
    D.barrier(env)


def _save(path: Path, cfg: TrainConfig, parts: Parts, state: RunState) -> None:
    """Checkpoint: weights, temperature, optimizer, scaler, step/epoch, sampler state, RNG."""
    nb = None if state.neighbours is None else torch.from_numpy(np.ascontiguousarray(state.neighbours))
    save_checkpoint(path, parts.model, config_dict(cfg), loss=parts.loss_fn.state_dict(),
                    optimizer=parts.optimizer.state_dict(), scaler=parts.scaler.state_dict(),
                    epoch=state.epoch, step=state.step, best_r1=state.best_r1, neighbours=nb,
                    rng=schedule.rng_state())


def _evaluate(model, data: RunData, cfg: TrainConfig, env: D.DistEnv, log: MetricsLog,
              console: Console, *, epoch: int) -> float:
    """Retrieval metrics on the eval split, logged; returns R@1 (percent)."""
    from s4g.embed import embed_eval_set
    from s4g.evaluate import retrieval_metrics

    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    q, r = embed_eval_set(model, data.eval, aerial_size=cfg.aerial_size, ground_size=cfg.ground_size,
                          device=env.device, batch_size=cfg.eval_batch_size, workers=cfg.workers,
                          fov=cfg.fov, random_heading=cfg.random_heading, seed=cfg.seed,
                          progress=env.is_main)
    ev = data.eval
    metrics = retrieval_metrics(q, r, ev.query_labels, ev.reference_labels,
                                semi_positives=ev.semi_positives, device=env.device)
    model.train(was_training)
    log.add({"epoch": epoch, "kind": "eval", "split": cfg.eval_split, **metrics,
             "eval_s": round(time.perf_counter() - t0, 2)})
    shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    console.print(f"epoch {epoch}: {cfg.eval_split} {shown}")
    return float(metrics["R@1"])


def _mine(model, data: RunData, cfg: TrainConfig, env: D.DistEnv) -> np.ndarray:
    """DSS: each class's neighbour_range most similar other references under the model."""
    from s4g.mining import mine_class_neighbours

    was_training = model.training
    model.eval()
    nb = mine_class_neighbours(model, data.train, k=min(cfg.neighbour_range, data.train.num_classes - 1),
                               aerial_size=cfg.aerial_size, ground_size=cfg.ground_size,
                               device=env.device, batch_size=cfg.eval_batch_size, workers=cfg.workers)
    model.train(was_training)
    return np.asarray(nb, dtype=np.int64)


def _baseline(data: RunData, log: MetricsLog, console: Console) -> None:
    """The synthetic world's colour-histogram R@1, logged so the model's numbers read honestly."""
    if data.baseline is None:
        return
    log.add({"epoch": 0, "kind": "colour_baseline", **data.baseline})
    console.print(f"colour-histogram baseline (no training): R@1 {data.baseline['R@1']:.2f}")


__all__ = [
    "MetricsLog", "Parts", "RunState", "TrainStep", "amp_setup", "config_dict", "resume_path", "run",
    "train_one_epoch", "train_step",
]
