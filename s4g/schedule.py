"""When things happen in a run: learning rate per step, evaluation and re-mining epochs,
optimizer parameter groups, and the RNG state a resumed run must restore."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from torch import nn


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Linear warm-up from base_lr/warmup_steps to base_lr over `warmup_steps` steps, then a
    half cosine from base_lr down to 0 at `total_steps`; steps past the end stay at 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices and conv kernels only.

    Biases, normalisation scales and the InfoNCE temperature (all tensors of rank < 2) are
    not decayed: shrinking them toward 0 has no regularising meaning (nanoGPT's rule).
    """
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def evaluates_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """Evaluate after training epoch `epoch` (1-based): every eval_every epochs and at the end."""
    return epoch == epochs or (eval_every > 0 and epoch % eval_every == 0)


def mines_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """Re-mine DSS neighbours after epoch `epoch`: after the GPS epoch 1, then with each
    evaluation (as the reference does), never after the last epoch (nothing would use them)."""
    return epoch < epochs and (epoch == 1 or evaluates_after(epoch, epochs, eval_every))


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


__all__ = [
    "evaluates_after",
    "lr_at",
    "mines_after",
    "param_groups",
    "rng_state",
    "seed_all",
    "set_rng_state",
]
