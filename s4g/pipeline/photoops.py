"""The batched photometric ops of the training augmentation (s4g.pipeline.augment).

Each op takes float images (N, 3, H, W) in [0, 1] on any device and one parameter row per
image, held on the host (CPU tensors: they are copied to the images' device, never read
back, so no op waits for the device). The kernel builders run on the host.
"""

from __future__ import annotations

import torch
from torch.nn import functional as nnf

from s4g.runtime import to_device

KERNEL = 7  # side of the kernel tensors: AdvancedBlur's largest size; smaller ones sit centred


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return to_device(v, like.device).to(like.dtype).view(-1, 1, 1, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)  # torchvision's weights and operation order
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = _col(factor, x)
    return x.mul(f).add_(other.mul(1 - f)).clamp_(0, 1)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x[i] * factor[i], clamped to [0, 1] (torchvision's adjust_brightness)."""
    return x.mul(_col(factor, x)).clamp_(0, 1)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend of x[i] and its mean grey level (torchvision's adjust_contrast)."""
    return _blend(x, _grey(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend of x[i] and its grey image (torchvision's adjust_saturation)."""
    return _blend(x, _grey(x), factor)


def hue_shift(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """x[i] with its HSV hue moved by turns[i] (in turns: 1 = 360°), saturation and value kept
    (torchvision's adjust_hue, the float form of albumentations' ColorJitter hue).

    Written without the HSV round trip's divisions by the value: with c = max - min (the
    chroma), RGB = max - c * clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1.
    """
    top, chroma = x.amax(-3, keepdim=True), x.amin(-3, keepdim=True)
    chroma = torch.sub(top, chroma, out=chroma)
    r, g, b = x.unbind(-3)
    top1, chroma1 = top.squeeze(-3), chroma.squeeze(-3)
    # hue in sixths of a turn, times the chroma, by the channel holding the maximum
    # (torchvision's case order)
    sixths = torch.where(top1 == r, g - b, torch.where(top1 == g, (b - r).add_(chroma1, alpha=2),
                                                       (r - g).add_(chroma1, alpha=4)))
    sixths = sixths.div_(torch.where(chroma1 > 0, chroma1, 1.0)).unsqueeze(-3).add_(6 * _col(turns, x))
    n = torch.arange(5, 0, -2, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)  # 5, 3, 1: no host copy
    k = torch.remainder(sixths + n, 6)
    return top - chroma * torch.minimum(k, 4 - k).clamp_(0, 1)


def blur_kernels(ksize: torch.Tensor, sigma: torch.Tensor, angle: torch.Tensor, beta: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
    """albumentations' AdvancedBlur kernels, (N, KERNEL, KERNEL) float32, each ksize[i]² centred.

    ksize (N,) odd ints <= KERNEL; sigma (N, 2) (x, y) pixels; angle (N,) radians; beta (N,);
    noise (N, KERNEL, KERNEL) multiplicative (its centred ksize² block used). At offset d =
    (column, row) from the centre: exp(-0.5 (dᵀ Σ⁻¹ d)^beta) * noise, Σ = R diag(σx², σy²) Rᵀ
    with R the rotation by angle, normalised to sum 1. Computed in float64 on the host.
    """
    ax = torch.arange(KERNEL, dtype=torch.float64) - KERNEL // 2
    dy, dx = torch.meshgrid(ax, ax, indexing="ij")
    a = angle.to(torch.float64).view(-1, 1, 1)
    c, s = torch.cos(a), torch.sin(a)
    inv = sigma.to(torch.float64).pow(-2)
    ix, iy = inv[:, 0].view(-1, 1, 1), inv[:, 1].view(-1, 1, 1)
    # Σ⁻¹ = R diag(1/σx², 1/σy²) Rᵀ, written out
    form = (c * c * ix + s * s * iy) * dx * dx + 2 * c * s * (ix - iy) * dx * dy + (s * s * ix + c * c * iy) * dy * dy
    k = torch.exp(-0.5 * form.pow(beta.to(torch.float64).view(-1, 1, 1))) * noise.to(torch.float64)
    half = (ksize.view(-1, 1, 1) // 2).to(torch.float64)
    k = torch.where((dx.abs() <= half) & (dy.abs() <= half), k, torch.zeros_like(k))
    return (k / k.sum(dim=(-2, -1), keepdim=True)).to(torch.float32)


def sharpen_kernels(alpha: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
    """albumentations' Sharpen kernels, (N, KERNEL, KERNEL) float32 with the 3×3 centred:
    (1 - alpha) * identity + alpha * [[-1, -1, -1], [-1, 8 + lightness, -1], [-1, -1, -1]]
    (not normalised: its sum, 1 - alpha (1 - lightness), also darkens)."""
    n, mid = alpha.shape[0], KERNEL // 2
    a, light = alpha.to(torch.float32).view(-1, 1, 1), lightness.to(torch.float32).view(-1, 1, 1)
    effect = torch.full((n, 3, 3), -1.0)
    effect[:, 1, 1] = 8 + light.view(-1)
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1
    k = torch.zeros(n, KERNEL, KERNEL)
    k[:, mid - 1:mid + 2, mid - 1:mid + 2] = (1 - a) * identity + a * effect
    return k


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """x[i] correlated with kernels[i] (N, k, k), k odd, anchor at the centre, borders
    mirrored without repeating the edge (OpenCV's filter2D default, BORDER_REFLECT_101),
    clamped to [0, 1]."""
    n, c, h, w = x.shape
    pad = kernels.shape[-1] // 2
    weight = to_device(kernels, x.device).to(x.dtype).repeat_interleave(c, 0)[:, None]
    padded = nnf.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return nnf.conv2d(padded, weight, groups=n * c).view(n, c, h, w).clamp_(0, 1)


def grid_dropout(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x with, per image i, GridDropout's holes set to 0. grid (N, 6) ints (unit_h, unit_w,
    hole_h, hole_w, shift_y, shift_x): the holes are hole_h × hole_w at rows shift_y + j unit_h,
    columns shift_x + i unit_w, cut at the image's edges."""
    _, _, h, w = x.shape
    uh, uw, hh, hw, sy, sx = (v[:, None] for v in to_device(grid, x.device).unbind(-1))
    rows = torch.arange(h, device=x.device)[None]
    cols = torch.arange(w, device=x.device)[None]
    in_rows = (rows >= sy) & (torch.remainder(rows - sy, uh) < hh)  # (N, H)
    in_cols = (cols >= sx) & (torch.remainder(cols - sx, uw) < hw)  # (N, W)
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)


def coarse_dropout(x: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """x with, per image i, the rectangles holes[i] (K, 4) (top, left, height, width) set to 0
    (height 0: no hole)."""
    n, _, h, w = x.shape
    top, left, bh, bw = to_device(holes, x.device).unbind(-1)  # (N, K)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[..., None]) & (rows < (top + bh)[..., None])  # (N, K, H)
    in_cols = (cols >= left[..., None]) & (cols < (left + bw)[..., None])  # (N, K, W)
    mask = torch.einsum("nkh,nkw->nhw", in_rows.to(x.dtype), in_cols.to(x.dtype)) > 0
    return x.masked_fill(mask[:, None], 0.0)


__all__ = ["KERNEL", "blur_kernels", "brightness", "coarse_dropout", "contrast", "filter2d", "grid_dropout",
           "hue_shift", "saturation", "sharpen_kernels"]
