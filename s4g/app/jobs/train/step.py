"""The optimisation step: what a run trains (encoder, loss with its temperature, optimizer,
mixed precision), the batch's gradient (whole, or chunk by chunk through the gradient cache
of s4g.model.gradcache) and one pass over an epoch's batches."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.progress import TextColumn
from torch import nn
from torch.utils.data import DataLoader

from s4g import runtime
from s4g.app.jobs.train.schedule import lr_at
from s4g.app.jobs.train.state import MetricsLog, RunState, restore_run_checkpoint, seed_all
from s4g.config import TrainConfig
from s4g.distributed import DistEnv
from s4g.flags import Flag
from s4g.model.chunksize import plan_chunks
from s4g.model.encoder import EmbeddingModel, set_trainable
from s4g.model.gradcache import average_gradients, broadcast_parameters, cached_backward
from s4g.model.loss import InfoNCE
from s4g.model.weights import initial_model
from s4g.pipeline.augment import augment_batch


class TrainStep(nn.Module):
    """Encoder + loss in one module, so DDP also averages the temperature's gradient."""

    def __init__(self, model: nn.Module, loss_fn: InfoNCE) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, ground: torch.Tensor, aerial: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model(ground), self.model(aerial))


@dataclasses.dataclass
class Parts:
    """The objects one run trains: encoder, loss (with the temperature), optimizer, AMP.

    chunk: pairs per chunk of the gradient cache in each process, None = the whole batch in
    one forward pass; chunk_note: what --chunk-size chose, for the user (None: not asked).
    """

    model: nn.Module
    loss_fn: InfoNCE
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    net: nn.Module  # TrainStep; DDP-wrapped when distributed without chunks
    chunk: int | None = None
    chunk_note: str | None = None


def build_parts(cfg: TrainConfig, env: DistEnv, ckpt: dict | None,
                ground_hw: tuple[int, int] | None = None) -> tuple[Parts, RunState]:
    """Fresh (seeded) or resumed model, loss, optimizer and scaler, on the run's device.
    ground_hw: (H, W) pixels of the ground images the step gets (a --fov crop is narrower than
    cfg.ground_size, the default), for --chunk-size auto's memory probe."""
    seed_all(cfg.seed)
    model = initial_model(cfg.backbone, pretrained=cfg.pretrained, pretrained_from=cfg.pretrained_from,
                          weights_file=cfg.weights, head=cfg.head, head_args=cfg.head_args,
                          lora_rank=cfg.lora_rank, backbone_args=cfg.backbone_args)
    ground_option = Flag.GROUND_SIZE if cfg.fov is None else f"{Flag.FOV}'s crop"
    model.check_image_size(*(ground_hw or cfg.ground_size), ground_option)
    model.check_image_size(cfg.aerial_size, cfg.aerial_size, Flag.AERIAL_SIZE)
    set_trainable(model, cfg.train_blocks)
    loss_fn = InfoNCE(cfg.label_smoothing, rank=env.rank, world_size=env.world_size)
    optimizer = torch.optim.AdamW(param_groups(model, loss_fn, cfg.backbone_lr_scale), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    autocast, scaler = runtime.mixed_precision(env.device)
    parts = Parts(model, loss_fn, optimizer, scaler, autocast, model)
    state = restore_run_checkpoint(ckpt, parts) if ckpt is not None else RunState()
    model.to(env.device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack this form
    loss_fn.to(env.device)
    _optimizer_to(optimizer, env.device)
    plan = plan_chunks(cfg, env, model, optimizer, autocast, ground_hw=ground_hw)
    parts.chunk, parts.chunk_note = plan.size, (plan.note if cfg.chunk_size != 0 else None)
    net: nn.Module = TrainStep(model, loss_fn)
    if env.distributed and parts.chunk is None:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    elif env.distributed:
        # Several backward passes per step: the chunked step averages the gradients itself,
        # once, after the last (batch_gradients), instead of DDP's hooks.
        broadcast_parameters(net)
    parts.net = net
    return parts, state


def param_groups(model: EmbeddingModel, loss_fn: nn.Module, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """AdamW's parameter groups: the trainable parameters only (frozen ones get no update,
    no moments and no all-reduce), the backbone's in a group of its own whose "lr_scale"
    multiplies the scheduled learning rate when backbone_lr_scale is not 1.

    Weight decay on every parameter, biases, norms and the temperature included, as the
    released training scripts (decay_exclue_bias = False) trained the published models.
    """
    if backbone_lr_scale == 1.0:
        return [{"params": [p for p in (*model.parameters(), *loss_fn.parameters()) if p.requires_grad]}]
    encoder = {id(p) for p in model.encoder.parameters()}
    own = [p for p in model.parameters() if p.requires_grad and id(p) in encoder]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder]
    return [{"params": own, "lr_scale": backbone_lr_scale},
            {"params": [*rest, *loss_fn.parameters()], "lr_scale": 1.0}]


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    # A resumed optimizer state arrives on the CPU; Adam's moments must live with the params.
    for per_param in optimizer.state.values():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and key != "step":
                per_param[key] = value.to(device)


def train_step(parts: Parts, ground: torch.Tensor, aerial: torch.Tensor, params: list[torch.Tensor],
               clip: float, device: torch.device) -> torch.Tensor:
    """One optimizer step on a batch of pairs; returns the detached loss, left on the device
    (no host sync here, except fp16's inf check inside scaler.step)."""
    ground = ground.to(device, non_blocking=True, memory_format=torch.channels_last)
    aerial = aerial.to(device, non_blocking=True, memory_format=torch.channels_last)
    # Before the forward pass: the last step's gradients need not share memory with it.
    parts.optimizer.zero_grad(set_to_none=True)
    loss = batch_gradients(parts, ground, aerial, params)
    parts.scaler.unscale_(parts.optimizer)  # clip the true gradients, not the scaled ones
    nn.utils.clip_grad_value_(params, clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return loss


def batch_gradients(parts: Parts, ground: torch.Tensor, aerial: torch.Tensor,
                    params: list[torch.Tensor]) -> torch.Tensor:
    """Accumulate into the .grad of `params` (every trained tensor) the scaler-scaled gradient
    of the loss on the batch, averaged over processes; return the detached loss.

    ground (B, 3, Hg, Wg), aerial (B, 3, Ha, Wa) on the device: this process's pairs.
    parts.chunk None: one forward and backward pass (DDP averages in its hooks); else the
    gradient cache in chunks of parts.chunk pairs, the same gradients to float rounding.
    """
    if parts.chunk is None:
        with parts.autocast():
            loss = parts.net(ground, aerial)
        parts.scaler.scale(loss).backward()
        return loss.detach()
    loss = cached_backward(parts.model, parts.loss_fn, ground, aerial, chunk=parts.chunk,
                           autocast=parts.autocast, scaler=parts.scaler)
    if parts.loss_fn.world_size > 1:  # over the processes whose embeddings the loss gathered
        average_gradients(params, parts.loss_fn.world_size)
    return loss


def train_one_epoch(parts: Parts, loader: DataLoader, env: DistEnv, cfg: TrainConfig, *,
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
    bar = runtime.progress(TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} img/s"),
                           console=console, transient=False, enabled=env.is_main)
    with bar:  # disabled (prints nothing) on ranks other than 0
        task = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=len(loader), loss="-", speed="-")
        for i, (ground, aerial, _, ground_params, aerial_params) in enumerate(loader):
            if ground.shape[0] >= 2:  # --skip-bad-images may empty a batch: nothing to contrast
                lr = lr_at(step, base_lr=cfg.lr, warmup_steps=warmup, total_steps=total)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                # uint8 views to the device; photometric augmentation and normalisation run there
                ground = augment_batch(ground, ground_params, env.device)
                aerial = augment_batch(aerial, aerial_params, env.device)
                running += train_step(parts, ground, aerial, params, cfg.clip_grad, env.device)
                window += 1
                step += 1
            if window and (step % cfg.log_every == 0 or i + 1 == len(loader)):
                if env.distributed:
                    torch.distributed.all_reduce(running)
                    running /= env.world_size
                value = running.item() / window  # sync point: once per log window
                speed = 2 * cfg.batch_size * window / (time.perf_counter() - t0)
                if log is not None:
                    log.add({"epoch": epoch, "step": step, "loss": value, "lr": lr,
                             "scale": float(parts.loss_fn.scale.detach()),  # (same window)
                             "images_per_s": speed})
                bar.update(task, loss=f"{value:.3f}", speed=f"{speed:.0f}")
                running.zero_()
                window, t0 = 0, time.perf_counter()
            bar.advance(task)
    return step


__all__ = ["Parts", "TrainStep", "batch_gradients", "build_parts", "param_groups", "train_one_epoch", "train_step"]
