"""The batched photometric ops against OpenCV and albumentations themselves, where they are
installed (the test extra brings both; skipped without them): the filter and the hue shift on fixed
values, the blur and sharpen kernels on fixed parameters, and the dropouts' mean dropped area
over many draws (fixed seeds).

albumentations 2.x is what the test extra installs; the reference trained with 1.3.x, whose
AdvancedBlur, Sharpen and CoarseDropout draw the same way, while 2.x's GridDropout splits the
image into whole cells where 1.3.x steps a fixed unit from the corner (see the dropout test).
"""

from __future__ import annotations

import math
import random

import augment_reference as R
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from s4g.pipeline import augment as A
from s4g.pipeline import photoops as ops

cv2 = pytest.importorskip("cv2")


def _image(seed: int = 0, h: int = 20, w: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("side", [3, 5, 7])
def test_filter2d_is_opencv_filter2d(side):
    img = _image(side)
    kernel = np.random.default_rng(side).normal(size=(side, side)).astype(np.float32) * 0.2
    kernel[side // 2, side // 2] += 1
    want = np.clip(cv2.filter2D(img, -1, kernel), 0, 1)
    got = ops.filter2d(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(kernel)[None])[0]
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), want, atol=1e-6)


@pytest.mark.parametrize("turns", [-0.15, 0.05, 0.14])
def test_hue_shift_is_opencv_hsv_shift(turns):
    """albumentations' ColorJitter hue on a float image: OpenCV's HSV, hue + turns * 360°."""
    img = _image(1)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + turns * 360, 360)
    want = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    got = ops.hue_shift(torch.from_numpy(img).permute(2, 0, 1)[None], torch.tensor([turns]))[0]
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), want, atol=2e-6)


class _Constant(random.Random):
    """A Python generator whose every uniform draw lands at the same point of its range."""

    def __init__(self, u: float):
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


class _Noise:
    def __init__(self, noise: np.ndarray):
        self.noise = noise

    def uniform(self, low, high, size):
        return self.noise[:size[0], :size[1]]


@pytest.mark.parametrize(("side", "sigma_x", "sigma_y", "degrees", "u"),
                         [(3, 0.3, 0.9, 30.0, 0.25), (5, 0.8, 0.2, -70.0, 0.75), (7, 1.0, 0.5, 89.0, 0.6)])
def test_blur_kernel_is_albumentations_advanced_blur(side, sigma_x, sigma_y, degrees, u):
    """AdvancedBlur with one-point ranges and its generators pinned: the kernel for known
    parameters (beta from u: below 1 when u < 0.5, as its two-case draw)."""
    alb = pytest.importorskip("albumentations")
    blur = alb.AdvancedBlur(blur_limit=(side, side), sigma_x_limit=(sigma_x, sigma_x),
                            sigma_y_limit=(sigma_y, sigma_y), rotate_limit=(degrees, degrees), p=1.0)
    if not hasattr(blur, "random_generator"):
        pytest.skip("albumentations < 2 draws from the global generators")
    noise = np.random.default_rng(side).uniform(0.9, 1.1, (side, side))
    blur.py_random, blur.random_generator = _Constant(u), _Noise(noise)
    want = blur.get_params()["kernel"]
    beta = 0.5 + 0.5 * u if u < 0.5 else 1 + 7 * u
    one = R.advanced_blur_kernel(side, sigma_x, sigma_y, math.radians(degrees), beta, noise)
    np.testing.assert_allclose(one, want, atol=1e-7)
    full = np.ones((A.KERNEL, A.KERNEL))
    cut = (A.KERNEL - side) // 2
    full[cut:A.KERNEL - cut, cut:A.KERNEL - cut] = noise
    batched = ops.blur_kernels(torch.tensor([side]), torch.tensor([[sigma_x, sigma_y]]),
                               torch.tensor([math.radians(degrees)]), torch.tensor([beta]), torch.tensor(full)[None])
    np.testing.assert_allclose(batched[0, cut:A.KERNEL - cut, cut:A.KERNEL - cut].numpy(), want, atol=1e-7)


def test_sharpen_kernel_is_albumentations_sharpen():
    alb = pytest.importorskip("albumentations")
    for alpha, lightness in ((0.2, 0.5), (0.3, 0.7), (0.5, 1.0)):
        want = alb.Sharpen(alpha=(alpha, alpha), lightness=(lightness, lightness), p=1.0).get_params()
        np.testing.assert_allclose(R.sharpen_kernel(alpha, lightness), want["sharpening_matrix"], atol=1e-6)


def _their_share(transform, h: int, w: int, n: int) -> float:
    alb = pytest.importorskip("albumentations")
    compose = alb.Compose([transform], seed=0)
    white = np.full((h, w, 3), 255, dtype=np.uint8)
    return float(np.mean([(compose(image=white)["image"][..., 0] == 0).mean() for _ in range(n)]))


def _our_share(op, field: str, h: int, w: int, ratio: float, n: int) -> float:
    ps = default_collate([A.draw_photometric(np.random.default_rng(s), (h, w), ratio) for s in range(n)])
    return float((op(torch.ones(n, 1, h, w), getattr(ps, field)) == 0).float().mean())


# (h, w, ratio, rows and columns 1.3.x's grid blacks out): a 384² tile's 15-pixel holes every
# 38 pixels, 10 whole and one cut to 4 pixels; a 384 × 768 panorama's 38-pixel holes every 76.
@pytest.mark.parametrize(("h", "w", "ratio", "rows", "cols"),
                         [(384, 384, 0.4, 10 * 15 + 4, 10 * 15 + 4), (384, 768, 0.5, 5 * 38 + 4, 10 * 38 + 8)])
def test_dropped_area_matches_albumentations(h, w, ratio, rows, cols):
    """The mean share of the view each dropout blacks out. CoarseDropout: the same
    distribution (10-25 holes, sides 10-20 % of the height), 400 draws each (the share's
    standard deviation is 0.04-0.07). GridDropout: 2.x with square units of 1.3.x's size
    splits the view into whole cells, which leaves out 1.3.x's cut holes at the far edges: up
    to 1.1 % of the view here."""
    alb = pytest.importorskip("albumentations")
    if int(alb.__version__.split(".")[0]) < 2:
        pytest.skip("the comparison is written with albumentations 2's arguments")
    low, high = A.hole_sides(h)
    coarse = alb.CoarseDropout(num_holes_range=(10, 25), hole_height_range=(low, high),
                               hole_width_range=(low, high), fill=0, p=1.0)
    ours, theirs = _our_share(ops.coarse_dropout, "holes", h, w, ratio, 400), _their_share(coarse, h, w, 400)
    assert abs(ours - theirs) < 0.02
    unit = A.grid_geometry(h, w, ratio)[1]
    grid = alb.GridDropout(ratio=ratio, unit_size_range=(unit, unit + 1), random_offset=False, fill=0, p=1.0)
    ours, theirs = _our_share(ops.grid_dropout, "grid", h, w, ratio, 2), _their_share(grid, h, w, 2)
    assert ours == pytest.approx(rows * cols / (h * w), abs=1e-6)
    assert 0 < ours - theirs < 0.012
