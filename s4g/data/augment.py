"""Photometric augmentation: parameters drawn per image on the host, applied to whole batches on
the training device.

The distribution (per view, independently; the paper's recipe):
- JPEG round trip at an integer quality uniform in [90, 100], with p 0.5 (s4g.data.jpeg);
- with p 0.5: brightness, contrast and saturation factors uniform in [0.85, 1.15], applied in
  a uniformly random order (torchvision's ColorJitter), then a hue rotation by a uniform angle
  in ±0.15 turn (rotation of the YIQ chroma plane: luma-preserving, one 3×3 matrix);
- with p 0.3: Gaussian blur, 5×5, sigma uniform in [0.1, 1.5], or sharpening (torchvision's
  adjust_sharpness, factor 2), each with p 1/2;
- ImageNet normalisation;
- with p 0.3: 8 rectangles erased to 0 (the mean colour), each drawn as torchvision's
  RandomErasing(scale=(0.002, 0.012), ratio=(0.5, 2)) draws one (up to 10 tries, else none).

`draw_photometric(rng, size)` draws one image's `PhotoParams` from the item's numpy generator,
so they are a pure function of (seed, epoch, index); a DataLoader stacks them. `augment_batch`
copies a uint8 batch to the device and applies every op to the images whose parameters ask for
it, each with its own values: the same code on a GPU and on the CPU. `photometric_reference`
is the per-image definition with torchvision's functional ops (libjpeg for the JPEG step);
tests/test_augment.py checks each batched op against it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as nnf
from torchvision.transforms.v2 import functional as F

from s4g.data.jpeg import jpeg_roundtrip
from s4g.runtime import to_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
P_JPEG, JPEG_QUALITY = 0.5, (90, 100)
P_COLOUR, JITTER, HUE_TURN = 0.5, 0.15, 0.15
P_FILTER, BLUR_SIZE, BLUR_SIGMA, SHARPNESS = 0.3, 5, (0.1, 1.5), 2.0
P_ERASE, ERASE_COUNT, ERASE_SCALE, ERASE_RATIO = 0.3, 8, (0.002, 0.012), (0.5, 2.0)
NO_FILTER, BLUR, SHARPEN = 0, 1, 2
# YIQ from RGB; a hue rotation turns the (I, Q) plane and keeps Y (luma).
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


class PhotoParams(NamedTuple):
    """One image's photometric parameters; a batch stacks each field on a leading dim N.

    quality: () int64 JPEG quality, 0 = no JPEG round trip. colour: () bool, colour jitter and
    hue rotation on. order: (3,) int64 permutation of 0 brightness, 1 contrast, 2 saturation.
    factors: (3,) float32 brightness, contrast, saturation factors. hue: () float32 radians.
    filter: () int64 NO_FILTER, BLUR or SHARPEN. sigma: () float32 blur sigma, pixels.
    erase: (ERASE_COUNT, 4) int64 rectangles (top, left, height, width); height 0 = none.
    """

    quality: torch.Tensor
    colour: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    hue: torch.Tensor
    filter: torch.Tensor
    sigma: torch.Tensor
    erase: torch.Tensor


def no_photometric() -> PhotoParams:
    """Parameters that leave an image as it is (only normalised): augmentation off."""
    return PhotoParams(torch.tensor(0), torch.tensor(False), torch.arange(3), torch.ones(3),
                       torch.tensor(0.0), torch.tensor(NO_FILTER), torch.tensor(1.0),
                       torch.zeros(ERASE_COUNT, 4, dtype=torch.int64))


def draw_photometric(rng: np.random.Generator, size_hw: tuple[int, int]) -> PhotoParams:
    """One image's parameters from `rng`, for an image of size_hw (H, W) pixels (the erased
    rectangles depend on it). Every field is drawn whether used or not (erasures aside), so
    the generator's stream does not depend on earlier outcomes."""
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    use_jpeg = rng.random() < P_JPEG
    colour = bool(rng.random() < P_COLOUR)
    order = rng.permutation(3)
    factors = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    hue = rng.uniform(-HUE_TURN, HUE_TURN) * 2 * math.pi
    use_filter, blur = rng.random() < P_FILTER, rng.random() < 0.5
    filt = (BLUR if blur else SHARPEN) if use_filter else NO_FILTER
    sigma = rng.uniform(*BLUR_SIGMA)
    erase = np.zeros((ERASE_COUNT, 4), dtype=np.int64)
    if rng.random() < P_ERASE:
        for k in range(ERASE_COUNT):
            erase[k] = _erase_box(rng, *size_hw)
    return PhotoParams(torch.tensor(quality if use_jpeg else 0), torch.tensor(colour),
                       torch.from_numpy(order.astype(np.int64)), torch.from_numpy(factors.astype(np.float32)),
                       torch.tensor(hue, dtype=torch.float32), torch.tensor(filt),
                       torch.tensor(sigma, dtype=torch.float32), torch.from_numpy(erase))


def _erase_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of one erased rectangle as RandomErasing draws it; (0,0,0,0)
    when 10 tries give none that fits."""
    log_ratio = (math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]))
    for _ in range(10):
        area = h * w * rng.uniform(*ERASE_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if eh < h and ew < w:
            return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
    return 0, 0, 0, 0


# ---- the batched ops: float images (N, 3, H, W) in [0, 1], one parameter row per image -----

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


def hue_matrices(theta: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) float32 RGB matrices rotating the YIQ chroma plane by theta (N,) radians."""
    t = theta.detach().cpu().to(torch.float64)
    c, s, one, zero = torch.cos(t), torch.sin(t), torch.ones_like(t), torch.zeros_like(t)
    rot = torch.stack([one, zero, zero, zero, c, -s, zero, s, c], -1).view(-1, 3, 3)
    to_yiq = torch.from_numpy(_TO_YIQ)
    return (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(torch.float32)


def hue_rotate(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x[i] with its hue turned by theta[i] radians (luma kept), clamped to [0, 1]."""
    m = to_device(hue_matrices(theta), x.device)
    return torch.einsum("nij,njhw->nihw", m, x).clamp_(0, 1)


def gaussian_kernels(sigma: torch.Tensor, size: int = BLUR_SIZE) -> torch.Tensor:
    """(N, size, size) float32 Gaussian kernels, torchvision's (softmax of -(x/sigma)^2 on
    x = linspace(±(size-1)/(2√2)), outer product)."""
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=size, dtype=torch.float32, device=sigma.device)
    k1 = torch.softmax(x[None].div(sigma.to(torch.float32)[:, None]).pow(2).neg(), dim=1)
    return k1[:, :, None] * k1[:, None, :]


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x[i] blurred with a BLUR_SIZE² Gaussian of sigma[i], reflect-padded (torchvision's
    gaussian_blur)."""
    n, c, h, w = x.shape
    k = to_device(gaussian_kernels(sigma.cpu()), x.device).repeat_interleave(c, 0)[:, None]
    pad = BLUR_SIZE // 2
    padded = nnf.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return nnf.conv2d(padded, k, groups=n * c).view(n, c, h, w)


def sharpen(x: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness(x, SHARPNESS) on every image."""
    return F.adjust_sharpness(x, SHARPNESS)


def erase(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """x with, per image i, the rectangles boxes[i] (K, 4) (top, left, height, width) set to 0."""
    n, _, h, w = x.shape
    boxes = to_device(boxes, x.device)
    top, left, bh, bw = boxes.unbind(-1)  # (N, K)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top[..., None]) & (rows < (top + bh)[..., None])  # (N, K, H)
    in_cols = (cols >= left[..., None]) & (cols < (left + bw)[..., None])  # (N, K, W)
    mask = torch.einsum("nkh,nkw->nhw", in_rows.to(x.dtype), in_cols.to(x.dtype)) > 0
    return x.masked_fill(mask[:, None], 0.0)


def normalise(image: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 scaled to [0, 1] and ImageNet-normalised."""
    return F.normalize(F.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)


# ---- the whole augmentation ----------------------------------------------------------------

def _where(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().squeeze(1)


def _apply(x: torch.Tensor, rows: torch.Tensor, fn, *args: torch.Tensor) -> None:
    """x[rows] = fn(x[rows], *args) in place; rows is a CPU index (no device sync)."""
    if rows.numel():
        at = to_device(rows, x.device)
        x[at] = fn(x[at], *args)


def _colour(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Colour jitter in each image's own op order, then the hue rotation."""
    ops = (brightness, contrast, saturation)
    for position in range(3):
        for op, fn in enumerate(ops):
            rows = _where(order[:, position] == op)
            _apply(x, rows, fn, factors[rows, op])
    return hue_rotate(x, hue)


def augment_batch(images: torch.Tensor, params: PhotoParams | None, device: torch.device | str | None = None) -> torch.Tensor:
    """A batch of views, uint8 (N, 3, H, W) on any device, -> float32 (N, 3, H, W) on `device`
    (default: the images'), augmented per `params` (stacked, on the CPU; None = only
    normalised), ImageNet-normalised, channels-last.

    Only the images an op applies to go through it; parameters stay on the host, so the
    training loop is not made to wait for the device.
    """
    x = to_device(images, device if device is not None else images.device)
    if params is not None:
        rows = _where(params.quality > 0)
        if rows.numel() and x is images:  # never write into the caller's tensor
            x = x.clone()
        _apply(x, rows, jpeg_roundtrip, params.quality[rows])
    x = F.to_dtype(x, torch.float32, scale=True)
    if params is not None:
        rows = _where(params.colour)
        _apply(x, rows, _colour, params.order[rows], params.factors[rows], params.hue[rows])
        rows = _where(params.filter == BLUR)
        _apply(x, rows, gaussian_blur, params.sigma[rows])
        _apply(x, _where(params.filter == SHARPEN), sharpen)
    x = F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    if params is not None:
        rows = _where((params.erase[:, :, 2] > 0).any(1))
        _apply(x, rows, erase, params.erase[rows])
    return x.contiguous(memory_format=torch.channels_last)


def photometric_reference(image: torch.Tensor, p: PhotoParams) -> torch.Tensor:
    """The per-image definition: uint8 (3, H, W) -> float32 (3, H, W), torchvision's
    functional ops in the order of the module docstring with p's values (one image's
    PhotoParams), libjpeg for the JPEG step. augment_batch is its batched form."""
    if int(p.quality):
        image = F.jpeg(image, int(p.quality))
    x = F.to_dtype(image, torch.float32, scale=True)
    if bool(p.colour):
        ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
        for op in p.order.tolist():
            x = ops[op](x, float(p.factors[op]))
        x = hue_rotate(x[None], p.hue.view(1))[0]
    if int(p.filter) == BLUR:
        x = F.gaussian_blur(x, [BLUR_SIZE, BLUR_SIZE], [float(p.sigma)] * 2)
    elif int(p.filter) == SHARPEN:
        x = F.adjust_sharpness(x, SHARPNESS)
    x = F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    for top, left, h, w in p.erase.tolist():
        if h:
            x = F.erase(x, top, left, h, w, torch.tensor(0.0))
    return x


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PhotoParams", "augment_batch", "brightness", "contrast",
           "draw_photometric", "erase", "gaussian_blur", "hue_rotate", "no_photometric", "normalise",
           "photometric_reference", "saturation", "sharpen"]
