"""Where and how tensors run: the device, mixed precision, and progress bars (one place each)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from s4g.errors import UserInputError
from s4g.flags import Flag


def pick_device(option: str | None = "auto", local_rank: int = 0) -> torch.device:
    """Resolve --device: "auto"/None -> this rank's GPU when CUDA is usable, else the CPU;
    "cuda" -> cuda:<local_rank>; "cpu" and "cuda:N" as given. UserInputError otherwise."""
    option = "auto" if option is None else str(option)
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    if option == "cuda":
        option = f"cuda:{local_rank}"
    try:
        device = torch.device(option)
    except RuntimeError:
        raise UserInputError(f"{Flag.DEVICE} {option!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"{Flag.DEVICE} {option!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"{Flag.DEVICE} {option}: CUDA is not available on this machine; use {Flag.DEVICE} cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserInputError(
            f"{Flag.DEVICE} {option}: this node has {torch.cuda.device_count()} GPU(s); under torchrun each process "
            f"takes the GPU of its local rank, so give --nproc-per-node at most the node's GPUs")
    return device


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on `device`: bf16 on GPUs that have it, fp16 on older GPUs, None
    (plain float32) on the CPU, where autocast would only slow the convolutions down."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A fresh autocast context for `device` per amp_dtype (a no-op context on the CPU)."""
    dtype = amp_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def mixed_precision(
    device: torch.device,
) -> tuple[Callable[[], contextlib.AbstractContextManager], torch.amp.GradScaler]:
    """(autocast context factory, GradScaler) of a training step on `device`: fp16 needs loss
    scaling, bf16 and float32 do not (a disabled scaler is a no-op, so one step code serves all)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)
    return (lambda: autocast(device)), scaler


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`. A host tensor bound for a GPU is pinned first: a copy from pageable
    memory waits for all work queued on the stream, which would stall the host once per small
    parameter tensor (s4g.pipeline.augment)."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def progress(
    *extra: ProgressColumn, console: Console | None = None, transient: bool = True, enabled: bool = True
) -> Progress:
    """A rich progress bar: description, bar, done/total, `extra` columns, time remaining.

    console None = stderr, with the bar shown only on a terminal (no residue in logs and pipes).
    """
    if console is None:
        console = Console(stderr=True)
        enabled = enabled and console.is_terminal
    columns: Sequence[Any] = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                              TimeRemainingColumn())
    return Progress(*columns, console=console, transient=transient, disable=not enabled)


__all__ = ["amp_dtype", "autocast", "mixed_precision", "pick_device", "progress", "to_device"]
