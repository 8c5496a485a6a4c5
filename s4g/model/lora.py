"""LoRA (Hu et al., ICLR 2022) on a transformer's attention projections.

Each `qkv`/`proj` Linear of every attention module becomes base(x) + (alpha / r) · B(A(x)),
A (r × in) Kaiming-initialised, B (out × r) zero, so the wrapped model starts as the plain
one. The base weights keep their state-dict names under `.base.`; only A and B train.

A few lines here instead of the `peft` package: peft wraps the whole model in its own class
and renames every key, where s4g needs only these two matrices per projection beside its own
checkpoint format, DDP and chunked step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Linear layers, by attribute name inside an attention module, that LoRA adapts.
TARGETS = ("qkv", "q_proj", "k_proj", "v_proj", "proj")


class LoRALinear(nn.Module):
    """nn.Linear plus a rank-r update. x (..., in) → (..., out)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scaling


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of `model` whose class name ends with "Attention" (timm's ViT and Eva)."""
    return [m for m in model.modules() if type(m).__name__.endswith("Attention")]


def add_lora(model: nn.Module, rank: int) -> int:
    """Wrap the attention projections of `model` in place; return how many were wrapped."""
    wrapped = 0
    for attn in attention_modules(model):
        for name in TARGETS:
            layer = getattr(attn, name, None)
            if isinstance(layer, nn.Linear):
                setattr(attn, name, LoRALinear(layer, rank))
                wrapped += 1
    return wrapped


__all__ = ["TARGETS", "LoRALinear", "add_lora", "attention_modules"]
