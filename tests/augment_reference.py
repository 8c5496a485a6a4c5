"""The per-image definition of s4g.pipeline.augment's photometric ops: the oracle the batched ops
are tested against (tests/test_augment.py, tests/test_augment_albumentations.py) and the
host-side path benches/bench_loader.py times. torchvision's functional ops, albumentations
1.3.1's kernel and hole formulas written out, libjpeg for the JPEG step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as nnf
from torchvision.transforms.v2 import functional as F

from s4g.pipeline.augment import (
    BLUR,
    COARSE,
    GRID,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KERNEL,
    SHARPEN,
    PhotoParams,
)


def advanced_blur_kernel(ksize: int, sigma_x: float, sigma_y: float, angle: float, beta: float,
                         noise: np.ndarray) -> np.ndarray:
    """One AdvancedBlur kernel, (ksize, ksize) float32, as albumentations 1.3.1 builds it:
    offsets (column, row) from the centre, Σ = R diag(σx², σy²) Rᵀ inverted, exp(-0.5 q^beta)
    on the quadratic form q, times noise (ksize, ksize), divided by its sum."""
    ax = np.arange(-(ksize // 2), ksize // 2 + 1, dtype=np.float64)
    grid = np.stack(np.meshgrid(ax, ax), axis=-1)
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    inverse = np.linalg.inv(turn @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ turn.T)
    kernel = np.exp(-0.5 * np.power(np.einsum("hwi,ij,hwj->hw", grid, inverse, grid), beta)) * noise
    return (kernel / kernel.sum()).astype(np.float32)


def sharpen_kernel(alpha: float, lightness: float) -> np.ndarray:
    """One Sharpen kernel, (3, 3) float32, as albumentations 1.3.1 builds it."""
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    effect = np.array([[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]])
    return ((1 - alpha) * identity + alpha * effect).astype(np.float32)


def correlate_one(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """One image (3, H, W) correlated with kernel (k, k) over mirrored borders (OpenCV's
    BORDER_REFLECT_101), as a sum of shifted copies, clamped to [0, 1]."""
    k = kernel.shape[0]
    padded = nnf.pad(x[None], (k // 2,) * 4, mode="reflect")[0]
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            out += float(kernel[i, j]) * padded[:, i:i + h, j:j + w]
    return out.clamp(0, 1)


def grid_holes(h: int, w: int, grid: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """GridDropout's holes (x1, y1, x2, y2) on an h × w image, listed as albumentations 1.3.1
    lists them from grid = (unit_h, unit_w, hole_h, hole_w, shift_y, shift_x)."""
    unit_h, unit_w, hole_h, hole_w, shift_y, shift_x = grid
    holes = []
    for i in range(w // unit_w + 1):
        for j in range(h // unit_h + 1):
            x1, y1 = min(shift_x + unit_w * i, w), min(shift_y + unit_h * j, h)
            holes.append((x1, y1, min(x1 + hole_w, w), min(y1 + hole_h, h)))
    return holes


def photometric_reference(image: torch.Tensor, p: PhotoParams) -> torch.Tensor:
    """The per-image definition: uint8 (3, H, W) -> float32 (3, H, W), the module docstring's
    ops in order with p's values (one image's PhotoParams): libjpeg for the JPEG step,
    torchvision's colour ops, albumentations' kernels and holes written out. augment_batch is
    its batched form."""
    if int(p.quality):
        image = F.jpeg(image, int(p.quality))
    x = F.to_dtype(image, torch.float32, scale=True)
    if bool(p.colour):
        colour_ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        for op in p.order.tolist():
            x = colour_ops[op](x, float(p.factors[op]))
    if int(p.filter) == BLUR:
        k, cut = int(p.ksize), (KERNEL - int(p.ksize)) // 2
        noise = p.noise.double().numpy()[cut:KERNEL - cut, cut:KERNEL - cut]
        x = correlate_one(x, advanced_blur_kernel(k, *p.sigma.tolist(), float(p.angle), float(p.beta), noise))
    elif int(p.filter) == SHARPEN:
        x = correlate_one(x, sharpen_kernel(*p.sharpen.tolist()))
    if int(p.dropout) == GRID:
        for x1, y1, x2, y2 in grid_holes(*x.shape[-2:], tuple(p.grid.tolist())):
            x[:, y1:y2, x1:x2] = 0
    elif int(p.dropout) == COARSE:
        for top, left, h, w in p.holes.tolist():
            if h:
                x = F.erase(x, top, left, h, w, torch.tensor(0.0))
    return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
