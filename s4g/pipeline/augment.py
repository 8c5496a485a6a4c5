"""Photometric augmentation: parameters drawn per image on the host, applied to whole batches on
the training device.

The distribution follows the Sample4Geo reference's training transforms (its
get_transforms_train) with the defaults of albumentations 1.3.1, the release of its time; per
view (ground image and aerial tile) independently, in this order:
- ImageCompression(90-100, p 0.5): JPEG round trip at an integer quality uniform in
  [90, 100] (s4g.pipeline.jpeg);
- ColorJitter(0.15, 0.15, 0.15, 0.15, p 0.5): brightness, contrast and saturation factors
  uniform in [0.85, 1.15] and a hue shift uniform in ±0.15 turn (in HSV), the four in a
  uniformly random order;
- OneOf([AdvancedBlur(), Sharpen()], p 0.3), each with p 1/2. AdvancedBlur: a kernel of side
  3, 5 or 7 (uniform), sigma x and y uniform in [0.2, 1], turned by an angle uniform in ±90°,
  generalised-Gaussian shape beta uniform in [0.5, 1] or [1, 8] (p 1/2 each), times noise
  uniform in [0.9, 1.1] per tap, normalised. Sharpen: alpha uniform in [0.2, 0.5], lightness
  in [0.5, 1]. Both as OpenCV's filter2D (mirrored borders);
- OneOf([GridDropout(ratio), CoarseDropout(10-25 holes, sides 10-20 % of the view's height)],
  p 0.3), each with p 1/2, holes filled with black (0, before the normalisation).
  GridDropout in 1.3.1 is a fixed grid: square units of max(2, W // 10) pixels (at most H),
  holes of int(unit * ratio) pixels at the units' top-left corners; ratio 0.5 for panoramas
  and 0.4 for aerial tiles and drone photos (the reference's choice). CoarseDropout: the hole
  count, then each hole's height and width (integers, independent) and its position, uniform;
- ImageNet normalisation.
Deliberate differences from the reference: the JPEG round trip runs after the resize to the
model's size (the reference compresses the full-size image before its Resize; s4g's host
decodes at a reduced DCT scale and resizes first, which is what makes it fast), and every op
after it works in float (the reference's run on 8-bit images, rounding after each op, the hue
in OpenCV's 2° steps).

`draw_photometric(rng, size, grid_ratio)` draws one image's `PhotoParams` from the item's numpy
generator, so they are a pure function of (seed, epoch, index); a DataLoader stacks them.
`augment_batch` copies a uint8 batch to the device and applies every op to the images whose
parameters ask for it, each with its own values (s4g.pipeline.photoops): the same code on a GPU and
on the CPU. tests/augment_reference.py holds the per-image definition that the tests check
each batched op against.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from s4g.pipeline import photoops as ops
from s4g.pipeline.jpeg import jpeg_roundtrip
from s4g.runtime import to_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
P_JPEG, JPEG_QUALITY = 0.5, (90, 100)
P_COLOUR, JITTER, HUE = 0.5, 0.15, 0.15
P_FILTER = 0.3
BLUR_SIZES, BLUR_SIGMA, BLUR_ANGLE_DEG, BLUR_BETA, BLUR_NOISE = (3, 5, 7), (0.2, 1.0), 90.0, (0.5, 1.0, 8.0), (0.9, 1.1)
SHARPEN_ALPHA, SHARPEN_LIGHTNESS = (0.2, 0.5), (0.5, 1.0)
P_DROPOUT = 0.3
GRID_RATIO_TILE, GRID_RATIO_PANORAMA = 0.4, 0.5
HOLE_COUNT, HOLE_SIDE = (10, 25), (0.1, 0.2)
NO_FILTER, BLUR, SHARPEN = 0, 1, 2
NO_DROPOUT, GRID, COARSE = 0, 1, 2
KERNEL = ops.KERNEL


class PhotoParams(NamedTuple):
    """One image's photometric parameters; a batch stacks each field on a leading dim N.

    quality: () int64 JPEG quality, 0 = no JPEG round trip. colour: () bool, colour jitter on.
    order: (4,) int64 permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue.
    factors: (4,) float32 brightness, contrast, saturation factors, hue shift in turns.
    filter: () int64 NO_FILTER, BLUR or SHARPEN. ksize: () int64 blur kernel side (3, 5, 7).
    sigma: (2,) float32 blur sigma x, y, pixels. angle: () float32 blur kernel turn, radians.
    beta: () float32 blur shape. noise: (KERNEL, KERNEL) float32 blur kernel noise (centred
    ksize² block used). sharpen: (2,) float32 alpha, lightness.
    dropout: () int64 NO_DROPOUT, GRID or COARSE. grid: (6,) int64 unit_h, unit_w, hole_h,
    hole_w, shift_y, shift_x, pixels. holes: (HOLE_COUNT[1], 4) int64 rectangles (top, left,
    height, width); height 0 = none.
    """

    quality: torch.Tensor
    colour: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    filter: torch.Tensor
    ksize: torch.Tensor
    sigma: torch.Tensor
    angle: torch.Tensor
    beta: torch.Tensor
    noise: torch.Tensor
    sharpen: torch.Tensor
    dropout: torch.Tensor
    grid: torch.Tensor
    holes: torch.Tensor


def no_photometric() -> PhotoParams:
    """Parameters that leave an image as it is (only normalised): augmentation off."""
    return PhotoParams(
        torch.tensor(0), torch.tensor(False), torch.arange(4), torch.tensor([1.0, 1.0, 1.0, 0.0]),
        torch.tensor(NO_FILTER), torch.tensor(BLUR_SIZES[0]), torch.ones(2), torch.tensor(0.0), torch.tensor(1.0),
        torch.ones(KERNEL, KERNEL), torch.tensor([0.0, 1.0]), torch.tensor(NO_DROPOUT),
        torch.tensor([2, 2, 1, 1, 0, 0]), torch.zeros(HOLE_COUNT[1], 4, dtype=torch.int64))


def grid_geometry(h: int, w: int, ratio: float) -> tuple[int, int, int, int, int, int]:
    """GridDropout's grid on an h × w image with albumentations 1.3.1's defaults: (unit_h,
    unit_w, hole_h, hole_w, shift_y, shift_x) pixels; units max(2, w // 10) wide, square
    unless the image is lower, holes int(unit * ratio) in [1, unit - 1], no shift."""
    unit_w = max(2, w // 10)
    unit_h = max(min(unit_w, h), 2)
    hole_w = min(max(int(unit_w * ratio), 1), unit_w - 1)
    hole_h = min(max(int(unit_h * ratio), 1), unit_h - 1)
    return unit_h, unit_w, hole_h, hole_w, 0, 0


def hole_sides(h: int) -> tuple[int, int]:
    """CoarseDropout's least and largest hole side on a view of height h: int(0.1 h) and
    int(0.2 h) as the reference writes them, at least 1."""
    low = max(1, int(HOLE_SIDE[0] * h))
    return low, max(low, int(HOLE_SIDE[1] * h))


def draw_photometric(rng: np.random.Generator, size_hw: tuple[int, int],
                     grid_ratio: float = GRID_RATIO_TILE) -> PhotoParams:
    """One image's parameters from `rng`, for a view of size_hw (H, W) pixels whose
    GridDropout has grid_ratio (GRID_RATIO_PANORAMA for panoramas). Every field is drawn
    whether used or not, so the generator's stream does not depend on earlier outcomes."""
    h, w = int(size_hw[0]), int(size_hw[1])
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    use_jpeg = rng.random() < P_JPEG
    colour = bool(rng.random() < P_COLOUR)
    order = rng.permutation(4)
    factors = [*rng.uniform(1 - JITTER, 1 + JITTER, size=3), rng.uniform(-HUE, HUE)]
    use_filter, blur = rng.random() < P_FILTER, rng.random() < 0.5
    ksize = BLUR_SIZES[int(rng.integers(len(BLUR_SIZES)))]
    sigma = rng.uniform(*BLUR_SIGMA, size=2)
    angle = math.radians(rng.uniform(-BLUR_ANGLE_DEG, BLUR_ANGLE_DEG))
    heavy_tails, u = rng.random() < 0.5, rng.random()  # AdvancedBlur: beta below or above 1, p 1/2 each
    low, high = BLUR_BETA[:2] if heavy_tails else BLUR_BETA[1:]
    beta = low + u * (high - low)
    noise = rng.uniform(*BLUR_NOISE, size=(KERNEL, KERNEL))
    sharpen = (rng.uniform(*SHARPEN_ALPHA), rng.uniform(*SHARPEN_LIGHTNESS))
    use_dropout, grid = rng.random() < P_DROPOUT, rng.random() < 0.5
    holes = _draw_holes(rng, h, w)
    filt = (BLUR if blur else SHARPEN) if use_filter else NO_FILTER
    dropout = (GRID if grid else COARSE) if use_dropout else NO_DROPOUT
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return PhotoParams(
        torch.tensor(quality if use_jpeg else 0), torch.tensor(colour), torch.from_numpy(order.astype(np.int64)),
        f32(factors), torch.tensor(filt), torch.tensor(ksize), f32(sigma), f32(angle), f32(beta), f32(noise),
        f32(sharpen), torch.tensor(dropout), torch.tensor(grid_geometry(h, w, grid_ratio)), torch.from_numpy(holes))


def _draw_holes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """CoarseDropout's holes, (HOLE_COUNT[1], 4) int64 (top, left, height, width), the rows past
    the drawn count zero. A side is cut to the image's (a narrow field-of-view crop)."""
    count = int(rng.integers(HOLE_COUNT[0], HOLE_COUNT[1] + 1))
    low, high = hole_sides(h)
    heights = np.minimum(rng.integers(low, high + 1, size=HOLE_COUNT[1]), h)
    widths = np.minimum(rng.integers(low, high + 1, size=HOLE_COUNT[1]), w)
    tops, lefts = rng.integers(0, h - heights + 1), rng.integers(0, w - widths + 1)
    holes = np.stack([tops, lefts, heights, widths], axis=1).astype(np.int64)
    holes[count:] = 0
    return holes


# ---- the whole augmentation ----------------------------------------------------------------

def normalise(image: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 scaled to [0, 1] and ImageNet-normalised."""
    return _normalise_(F.to_dtype(image, torch.float32, scale=True))


def _normalise_(x: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) ImageNet-normalised in place: torchvision's normalize with the
    constants copied from pinned memory (its own copy from a list waits for the device)."""
    mean = to_device(torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1), x.device)
    std = to_device(torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1), x.device)
    return x.sub_(mean).div_(std)


def _where(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)


def _apply(x: torch.Tensor, rows: torch.Tensor, fn, *args: torch.Tensor) -> None:
    """x[rows] = fn(x[rows], *args) in place; rows is a CPU index (no device sync)."""
    if rows.numel():
        at = to_device(rows, x.device)
        x[at] = fn(x[at], *args)


def _colour(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """The four colour ops in each image's own order."""
    steps = (ops.brightness, ops.contrast, ops.saturation, ops.hue_shift)
    for position in range(len(steps)):
        for op, fn in enumerate(steps):
            rows = _where(order[:, position] == op)
            _apply(x, rows, fn, factors[rows, op])
    return x


def _filter(x: torch.Tensor, p: PhotoParams) -> None:
    """AdvancedBlur and Sharpen in place, one convolution per kernel size (3, 5, 7)."""
    size = torch.where(p.filter == SHARPEN, 3, p.ksize)
    for side in BLUR_SIZES:
        rows = _where((p.filter != NO_FILTER) & (size == side))
        if not rows.numel():
            continue
        blur = ops.blur_kernels(p.ksize[rows], p.sigma[rows], p.angle[rows], p.beta[rows], p.noise[rows])
        sharp = ops.sharpen_kernels(p.sharpen[rows, 0], p.sharpen[rows, 1])
        kernels = torch.where((p.filter[rows] == BLUR).view(-1, 1, 1), blur, sharp)
        cut = (KERNEL - side) // 2
        _apply(x, rows, ops.filter2d, kernels[:, cut:KERNEL - cut, cut:KERNEL - cut].contiguous())


def augment_batch(images: torch.Tensor, params: PhotoParams | None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """A batch of views, uint8 (N, 3, H, W) on any device, -> float32 (N, 3, H, W) on `device`
    (default: the images'), augmented per `params` (stacked, on the CPU; None = only
    normalised), ImageNet-normalised, channels-last.

    Only the images an op applies to go through it; parameters stay on the host, so the
    training loop is not made to wait for the device.
    """
    x = to_device(images, device if device is not None else images.device)
    if params is None:
        return normalise(x).contiguous(memory_format=torch.channels_last)
    rows = _where(params.quality > 0)
    if rows.numel() and x is images:  # never write into the caller's tensor
        x = x.clone()
    _apply(x, rows, jpeg_roundtrip, params.quality[rows])
    x = F.to_dtype(x, torch.float32, scale=True)
    rows = _where(params.colour)
    _apply(x, rows, _colour, params.order[rows], params.factors[rows])
    _filter(x, params)
    rows = _where(params.dropout == GRID)
    _apply(x, rows, ops.grid_dropout, params.grid[rows])
    rows = _where(params.dropout == COARSE)
    _apply(x, rows, ops.coarse_dropout, params.holes[rows])
    return _normalise_(x).contiguous(memory_format=torch.channels_last)


__all__ = ["BLUR", "COARSE", "GRID", "GRID_RATIO_PANORAMA", "GRID_RATIO_TILE", "IMAGENET_MEAN", "IMAGENET_STD",
           "KERNEL", "NO_DROPOUT", "NO_FILTER", "SHARPEN", "PhotoParams", "augment_batch", "draw_photometric",
           "grid_geometry", "hole_sides", "no_photometric", "normalise"]
