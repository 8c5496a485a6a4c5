"""Aggregation heads: a backbone's feature map (and class token) → one global descriptor.

Every head takes `Features` and returns (B, D) float, not yet normalised; EmbeddingModel
L2-normalises the result. The defaults are each paper's published ones:

- GeM (Radenović et al., TPAMI 2018): p = 3 learned, eps 1e-6; D = C.
- MixVPR (Ali-bey et al., WACV 2023): 4 feature-mixer layers, mlp_ratio 1, 1024 → 512
  channels, 4 output rows over a 20×20 map; D = 512 · 4 = 2048 at those defaults.
- SALAD (Izquierdo & Civera, CVPR 2024): 64 clusters of 128 dimensions, a 256-d global
  token from the class token, 512 hidden units, dropout 0.3, 3 Sinkhorn iterations with a
  learned dust bin; D = 64 · 128 + 256 = 8448.

MixVPR's token-mixing MLP works on a fixed number of positions, while s4g feeds one encoder
with two image shapes (a panorama and a square tile): the map is first average-pooled to
(in_h, in_w) (`adaptive_avg_pool2d`), which is the identity at the paper's 20×20.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from s4g.errors import UserInputError
from s4g.flags import Flag


@dataclass
class Features:
    """What a backbone hands a head: grid (B, C, h, w) of local features, and the class token
    (B, C), None for backbones that have none (CNNs)."""

    grid: torch.Tensor
    cls: torch.Tensor | None


class GeM(nn.Module):
    """Generalised mean pooling: (mean over positions of clamp(x, eps)^p)^(1/p) per channel.
    p = 1 is the mean of the clamped map, p → ∞ its maximum. Output (B, C)."""

    def __init__(self, channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps
        self.out_dim = channels

    def forward(self, feats: Features) -> torch.Tensor:
        x = feats.grid.float().clamp(min=self.eps).pow(self.p)
        return x.mean(dim=(-2, -1)).pow(1.0 / self.p)


class _FeatureMixerLayer(nn.Module):
    # MixVPR's block: an MLP over the flattened positions of each channel, with a residual.
    def __init__(self, positions: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(positions * mlp_ratio)
        self.mix = nn.Sequential(nn.LayerNorm(positions), nn.Linear(positions, hidden), nn.ReLU(),
                                 nn.Linear(hidden, positions))
        for m in self.modules():  # the paper's initialisation
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(nn.Module):
    """MixVPR: feature mixing over positions, then channel and row projections.
    (B, C, h, w) → pooled to (B, C, in_h, in_w) → (B, out_channels · out_rows)."""

    def __init__(self, channels: int, in_h: int = 20, in_w: int = 20, out_channels: int = 512,
                 mix_depth: int = 4, mlp_ratio: float = 1.0, out_rows: int = 4) -> None:
        super().__init__()
        self.size = (in_h, in_w)
        positions = in_h * in_w
        self.mix = nn.Sequential(*[_FeatureMixerLayer(positions, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(channels, out_channels)
        self.row_proj = nn.Linear(positions, out_rows)
        self.out_dim = out_channels * out_rows

    def forward(self, feats: Features) -> torch.Tensor:
        x = feats.grid
        if tuple(x.shape[-2:]) != self.size:
            x = F.adaptive_avg_pool2d(x, self.size)
        x = self.mix(x.flatten(2))                      # (B, C, h·w)
        x = self.channel_proj(x.transpose(1, 2))        # (B, h·w, out_channels)
        x = self.row_proj(x.transpose(1, 2))            # (B, out_channels, out_rows)
        return x.flatten(1)


def log_optimal_transport(scores: torch.Tensor, dust_bin: torch.Tensor, iters: int) -> torch.Tensor:
    """SALAD's assignment: log of the transport plan between m clusters (+ a dust bin) and n
    features, by `iters` log-domain Sinkhorn iterations, scaled so that each feature's column
    sums to 1 and, at convergence, each cluster's row to 1 and the dust bin's to n - m.

    scores (B, m, n) → (B, m + 1, n) log-probabilities (the dust bin last). Needs n > m.
    """
    b, m, n = scores.shape
    aug = torch.cat([scores, dust_bin.to(scores.dtype).expand(b, 1, n)], dim=1)
    norm = -math.log(n + m)
    log_a = torch.full((m + 1,), norm, dtype=scores.dtype, device=scores.device)
    log_a[-1] = log_a[-1] + math.log(n - m)
    log_b = torch.full((n,), norm, dtype=scores.dtype, device=scores.device)
    log_a, log_b = log_a.expand(b, -1), log_b.expand(b, -1)
    u, v = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(iters):
        u = log_a - torch.logsumexp(aug + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(aug + u.unsqueeze(2), dim=1)
    return aug + u.unsqueeze(2) + v.unsqueeze(1) - norm


class SALAD(nn.Module):
    """SALAD: optimal-transport soft assignment of local features to clusters, plus a global
    token from the class token. (B, C, h, w) and (B, C) → (B, clusters · cluster_dim + token_dim),
    the cluster part intra-normalised per cluster and the token L2-normalised."""

    def __init__(self, channels: int, num_clusters: int = 64, cluster_dim: int = 128, token_dim: int = 256,
                 hidden: int = 512, dropout: float = 0.3, sinkhorn_iters: int = 3) -> None:
        super().__init__()
        self.num_clusters, self.cluster_dim, self.iters = num_clusters, cluster_dim, sinkhorn_iters
        self.token_features = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, token_dim))
        self.cluster_features = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.Dropout(dropout), nn.ReLU(),
                                              nn.Conv2d(hidden, cluster_dim, 1))
        self.score = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.Dropout(dropout), nn.ReLU(),
                                   nn.Conv2d(hidden, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.out_dim = num_clusters * cluster_dim + token_dim

    def forward(self, feats: Features) -> torch.Tensor:
        if feats.cls is None:  # pragma: no cover - build_head refuses such backbones
            raise ValueError("SALAD needs a class token")
        x = feats.grid
        n = x.shape[-2] * x.shape[-1]
        if n <= self.num_clusters:
            raise UserInputError(
                f"SALAD with {self.num_clusters} clusters needs more than {self.num_clusters} feature positions, "
                f"but the images give {x.shape[-2]}×{x.shape[-1]} = {n}; use larger images or fewer clusters "
                f"({Flag.HEAD_ARG} num_clusters=K)"
            )
        f = self.cluster_features(x).flatten(2).float()              # (B, l, n)
        p = self.score(x).flatten(2).float()                         # (B, m, n)
        t = self.token_features(feats.cls).float()                   # (B, token_dim)
        p = log_optimal_transport(p, self.dust_bin.float(), self.iters).exp()[:, :-1]
        agg = torch.einsum("bmn,bln->blm", p, f)                     # (B, l, m)
        return torch.cat([F.normalize(t, dim=-1), F.normalize(agg, dim=1).flatten(1)], dim=-1)


class ClassToken(nn.Module):
    """The transformer's class token (after its final norm) as the descriptor. Output (B, C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_dim = channels

    def forward(self, feats: Features) -> torch.Tensor:
        assert feats.cls is not None
        return feats.cls


HEADS = ("pool", "cls", "gem", "mixvpr", "salad")
_CLASSES: dict[str, type[nn.Module]] = {"cls": ClassToken, "gem": GeM, "mixvpr": MixVPR, "salad": SALAD}


def build_head(name: str, channels: int, has_cls: bool, args: Mapping[str, Any] | None = None) -> nn.Module:
    """The head `name` (not "pool", which is the backbone's own) for `channels`-wide features;
    args: keyword arguments overriding the paper's defaults (--head-arg KEY=VALUE)."""
    if name not in _CLASSES:
        raise UserInputError(f"{Flag.HEAD} {name!r}: choose one of {', '.join(HEADS)}")
    if name in ("cls", "salad") and not has_cls:
        raise UserInputError(f"{Flag.HEAD} {name} needs a class token, which this backbone does not have; "
                             "use pool, gem or mixvpr")
    try:
        return _CLASSES[name](channels, **dict(args or {}))
    except TypeError as err:
        raise UserInputError(f"{Flag.HEAD_ARG} for {Flag.HEAD} {name}: {err}") from None


__all__ = ["HEADS", "SALAD", "ClassToken", "Features", "GeM", "MixVPR", "build_head", "log_optimal_transport"]
