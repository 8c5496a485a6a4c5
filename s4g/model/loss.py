"""Symmetric InfoNCE with a learnable temperature, and its multi-process form.

Under data parallelism every rank embeds its own slice of the global batch. Each rank
gathers the embeddings of all ranks *with* gradients and scores only its own rows against
every column, so rank k's loss is the mean over its rows of the single-process loss terms.
The gradient of the gathered tensors flows back to the rank that produced them (the
all-gather's backward sums the contributions of every rank), so each rank holds
∂(Σ_k L_k)/∂(own embeddings) = W · ∂L/∂(own embeddings); DDP's gradient averaging divides by
W again, and the parameters receive exactly ∂L/∂θ of the loss on the concatenated batch.
No extra 1/world_size factor is needed.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

INIT_LOGIT_SCALE = math.log(1.0 / 0.07)


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's (B, D) `t` stacked in rank order, (world_size·B, D), differentiable: the
    backward is a reduce-scatter that sums every rank's gradient for each rank's rows."""
    from torch.distributed import _functional_collectives as fc

    # newer torch names it all_gather_single_autograd and deprecates the older name
    gather = getattr(fc, "all_gather_single_autograd", None) or fc.all_gather_tensor_autograd
    group = dist.group.WORLD
    assert group is not None, "world_size > 1 without a process group"
    return gather(t.contiguous(), 0, group)


def gather_features(
    query: torch.Tensor, reference: torch.Tensor, rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's (B, D) embeddings into (world_size·B, D), keeping gradients.

    Rank r's rows sit at [r·B, (r+1)·B). The local tensors are put back in place of their
    gathered copies so autograd sees them directly (as open_clip does); the other ranks'
    rows carry gradients through the collective's backward. world_size 1 returns the inputs.
    """
    if world_size == 1:
        return query, reference
    all_q = list(_all_gather(query).chunk(world_size))
    all_r = list(_all_gather(reference).chunk(world_size))
    all_q[rank] = query
    all_r[rank] = reference
    return torch.cat(all_q, dim=0), torch.cat(all_r, dim=0)


class InfoNCE(nn.Module):
    """Symmetric InfoNCE over a batch of (query, reference) pairs, positives on the diagonal.

    forward(query, reference): both (B, D) float, L2-normalised, row i of each is pair i
    -> scalar loss ½(CE(s·q̂r̂ᵀ, diag) + CE(s·r̂q̂ᵀ, diag)) with label smoothing, where
    s = exp(logit_scale) and logit_scale is learned (init log(1/0.07)), uncapped as in the
    reference (CLIP-style code caps s at 100; Sample4Geo's released training does not).
    With world_size > 1, B is the rank's share; the loss covers the rank's own rows against
    the columns of all ranks (see the module docstring for why the gradients match).
    """

    def __init__(
        self, label_smoothing: float = 0.1, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE, dtype=torch.float32))
        self.label_smoothing = label_smoothing
        self.rank = rank
        self.world_size = world_size

    @property
    def scale(self) -> torch.Tensor:
        """The multiplier s = exp(logit_scale) (0-d tensor)."""
        return self.logit_scale.exp()

    def forward(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        q, r = query.float(), reference.float()
        all_q, all_r = gather_features(q, r, self.rank, self.world_size)
        scale = self.scale
        logits_q = scale * q @ all_r.T  # (B, W·B): own queries against every reference
        logits_r = scale * r @ all_q.T  # (B, W·B): own references against every query
        labels = torch.arange(q.shape[0], device=q.device) + self.rank * q.shape[0]
        ce_q = F.cross_entropy(logits_q, labels, label_smoothing=self.label_smoothing)
        ce_r = F.cross_entropy(logits_r, labels, label_smoothing=self.label_smoothing)
        return 0.5 * (ce_q + ce_r)


__all__ = ["InfoNCE", "gather_features", "INIT_LOGIT_SCALE"]
