"""JPEG compression and decompression of a batch of images as tensor ops, on any device.

What libjpeg does to an image at quality q, written with torch so that a whole batch, each
image at its own quality, runs on the training device in a few kernels:
RGB -> YCbCr (JFIF, 8-bit), chroma 2×2 averaged (4:2:0, libjpeg's default), edges replicated
to whole 16×16 macroblocks, 8×8 DCT, division by the standard (Annex K) tables scaled for q
and rounding, then the way back: dequantisation, inverse DCT, chroma upsampled with libjpeg's
"fancy" triangle filter (= bilinear, half-pixel centres), YCbCr -> RGB, rounding to 8 bits.
libjpeg computes the DCT in scaled integers, this in float: against torchvision's libjpeg round
trip (`torchvision.transforms.v2.functional.jpeg`) the result differs by ~0.6 grey levels on
average at q 90-100 and its error against the input stays within 2 % of libjpeg's
(tests/test_augment.py holds the bounds).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as nnf

from s4g.runtime import to_device

# The example tables of the JPEG standard (ITU T.81 Annex K), row-major, the ones libjpeg scales.
_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32))


def quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) quantisation tables (N, 64) float32 for qualities (N,) in [1, 100], as
    libjpeg's jpeg_set_quality(q, force_baseline=TRUE) scales the standard tables."""
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, torch.floor(5000 / q), 200 - 2 * q)[:, None]

    def scaled(base: tuple[int, ...]) -> torch.Tensor:
        table = torch.tensor(base, dtype=torch.float64)[None]
        return torch.floor((table * scale + 50) / 100).clamp(1, 255).to(torch.float32)

    return scaled(_LUMA), scaled(_CHROMA)


def _dct_basis() -> torch.Tensor:
    """The orthonormal 2-D DCT-II of an 8×8 block as a (64, 64) matrix (JPEG's DCT)."""
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return torch.kron(m, m).to(torch.float32)


_BASIS = _dct_basis()


def _code_planes(planes: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Level shift, DCT, quantise, dequantise, inverse DCT and round planes (N, H, W) (H, W
    multiples of 8) with one table (N, 64) per plane."""
    n, h, w = planes.shape
    basis = to_device(_BASIS, planes.device)
    blocks = (planes - 128).view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(n, -1, 64)
    q = to_device(tables, planes.device).view(n, 1, 64)
    coef = torch.round((blocks @ basis.T) / q).mul_(q)
    out = (coef @ basis).view(n, h // 8, w // 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, h, w)
    return out.add_(128).round_().clamp_(0, 255)


def jpeg_roundtrip(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) uint8 after JPEG encoding at quality[i] (N,) ints in [1, 100] and
    decoding, (N, 3, H, W) uint8 on the images' device (see the module docstring)."""
    n, _, h, w = images.shape
    if n == 0:
        return images.clone()
    x = images.to(torch.float32)
    r, g, b = x.unbind(1)
    ycc = torch.stack([
        0.299 * r + 0.587 * g + 0.114 * b,
        -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128,
        0.5 * r - 0.418687589 * g - 0.081312411 * b + 128,
    ], 1).round_()
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    ycc = nnf.pad(ycc, (0, wp - w, 0, hp - h), mode="replicate")
    luma_t, chroma_t = quant_tables(quality.cpu())
    y = _code_planes(ycc[:, 0], luma_t)[:, :h, :w]
    chroma = nnf.avg_pool2d(ycc[:, 1:], 2).round_().reshape(2 * n, hp // 2, wp // 2)
    chroma = _code_planes(chroma, chroma_t.repeat_interleave(2, 0)).view(n, 2, hp // 2, wp // 2)
    chroma = nnf.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).round_()
    cb, cr = chroma[:, 0, :h, :w] - 128, chroma[:, 1, :h, :w] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136286 * cb - 0.714136286 * cr, y + 1.772 * cb], 1)
    return rgb.round_().clamp_(0, 255).to(torch.uint8)


__all__ = ["jpeg_roundtrip", "quant_tables"]
