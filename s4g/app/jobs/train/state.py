"""What a run carries from epoch to epoch and writes down: the run state, the metrics log,
the RNG states, and the checkpoints that let an interrupted run resume to the same weights."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4g.config import TrainConfig
from s4g.fileio import atomic_path, read_json_lines
from s4g.flags import Flag
from s4g.model.checkpoint import save_checkpoint
from s4g.model.encoder import load_state_strict


@dataclasses.dataclass
class RunState:
    """What changes during a run and is saved with every checkpoint."""

    epoch: int = 0  # last completed epoch
    step: int = 0  # optimizer steps taken
    best_r1: float = -1.0
    mined: np.ndarray | None = None  # (C, K) int64 DSS neighbour lists, None before the first mining


class MetricsLog:
    """metrics.jsonl, rewritten atomically on every record (it stays small)."""

    def __init__(self, path: Path, keep_upto_epoch: int | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if keep_upto_epoch is not None and path.is_file():
            # Resuming: drop lines of epochs the interrupted run had not checkpointed.
            lines = read_json_lines(path)
            self.records = [r for r in lines if r.get("epoch", 0) <= keep_upto_epoch]

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))


def rng_state() -> dict[str, Any]:
    """torch, CUDA, numpy and Python RNG states as tensors and plain values, so the
    checkpoint loads with weights_only=True."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured (the CUDA part only when CUDA is present)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's `random`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_run_checkpoint(path: Path, cfg: TrainConfig, parts, state: RunState) -> None:
    """Checkpoint: weights, temperature, optimizer, scaler, step/epoch, sampler state, RNG.

    parts: the run's s4g.app.jobs.train.step.Parts."""
    nb = None if state.mined is None else torch.from_numpy(np.ascontiguousarray(state.mined))
    save_checkpoint(path, parts.model, cfg.to_json(), loss=parts.loss_fn.state_dict(),
                    optimizer=parts.optimizer.state_dict(), scaler=parts.scaler.state_dict(),
                    epoch=state.epoch, step=state.step, best_r1=state.best_r1, neighbours=nb,
                    rng=rng_state())


def restore_run_checkpoint(ckpt: dict[str, Any], parts) -> RunState:
    """Load a run checkpoint's weights, temperature, optimizer and scaler into `parts` (on
    the CPU, before they move to the device); return its RunState."""
    load_state_strict(parts.model, ckpt["model"], source=f"{Flag.RESUME} checkpoint")
    parts.loss_fn.load_state_dict(ckpt["loss"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"]:  # empty when the run had no loss scaling (CPU, bf16): nothing to carry over
        parts.scaler.load_state_dict(ckpt["scaler"])
    nb = ckpt.get("neighbours")
    return RunState(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        best_r1=float(ckpt["best_r1"]),
        mined=None if nb is None else nb.numpy(),
    )


__all__ = [
    "MetricsLog", "RunState", "restore_run_checkpoint", "rng_state", "save_run_checkpoint", "seed_all",
    "set_rng_state",
]
