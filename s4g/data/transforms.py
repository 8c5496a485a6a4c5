"""Image transforms: paired geometric augmentation, per-view photometric augmentation,
limited field of view, and the evaluation transform.

Conventions (shared by every dataset and by the synthetic renderer):
- Aerial tiles are north-up: image row 0 is north, the last column is east.
- Panoramas are north-aligned equirectangular images: column x (0-based) of a width-W
  panorama looks along the compass azimuth  az(x) = (x + 0.5) * 360 / W - 180  degrees,
  clockwise from north; the centre of the image (x = W/2) faces north, x = 3W/4 faces east.

Paired geometry keeps the two views of a pair consistent:
- Horizontal flip of the tile (east <-> west) <=> horizontal flip of the panorama
  (az -> -az).
- Rotating the tile counter-clockwise by r * 90 degrees (`torch.rot90(tile, r)`, as the image
  is displayed: what was at the east edge ends up at the top) <=> circular shift of the
  panorama by -r * W / 4 columns (`torch.roll(pano, -r*W//4, -1)`): the new centre column
  shows what faced az = r * 90 degrees before, which is exactly what the rotated tile now
  has to the north.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from s4g.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
P_FLIP = 0.5
P_ROTATE = 0.75


def check_fov(fov_deg: float | None) -> None:
    """UserInputError unless fov_deg is None or in (0, 360]."""
    if fov_deg is not None and not (0 < float(fov_deg) <= 360):
        raise UserInputError(f"--fov must be in (0, 360] degrees, got {fov_deg}.")


def fov_size(ground_size: tuple[int, int], fov_deg: float | None) -> tuple[int, int]:
    """(H, w) the model sees a fov_deg crop of a ground_size (H, W) panorama at: the height
    kept and w = max(1, round(W * fov_deg / 360)), the width crop_fov cuts, so a limited view
    is never stretched to the panorama's width (as TransGeo/ConGeo crop). None -> (H, W)."""
    h, w = int(ground_size[0]), int(ground_size[1])
    if fov_deg is None:
        return h, w
    check_fov(fov_deg)
    return h, max(1, min(w, math.floor(w * float(fov_deg) / 360.0 + 0.5)))


def crop_fov(pano: torch.Tensor, fov_deg: float, heading_deg: float) -> torch.Tensor:
    """The part of a north-aligned panorama seen with a horizontal field of view.

    pano: (C, H, W) any dtype; fov_deg in (0, 360]; heading_deg: compass direction of the
    view's centre, clockwise from north (0 = the panorama's centre column), any real value.
    Returns (C, H, w) with w = max(1, round(W * fov_deg / 360)), wrapping around the seam.
    Turning the heading by 360 * k / W degrees equals rolling the panorama by -k columns.
    """
    check_fov(fov_deg)
    width = pano.shape[-1]
    w = max(1, min(width, math.floor(width * float(fov_deg) / 360.0 + 0.5)))
    # Column of the heading's centre is (heading + 180) * W / 360 - 0.5; the first column is
    # w/2 - 0.5 columns left of it. floor(x + 0.5) rounds the same way for every heading.
    start = math.floor((float(heading_deg) + 180.0) * width / 360.0 - w / 2.0 + 0.5)
    cols = torch.remainder(torch.arange(start, start + w), width)
    return pano.index_select(-1, cols)


def paired_geometry(
    pano: torch.Tensor, tile: torch.Tensor, flip: bool, quarter_turns: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the same flip and rotation to a (panorama (C,H,W), north-up tile (C,S,S)) pair.

    flip first (both views mirrored east<->west), then rotate the tile counter-clockwise by
    quarter_turns * 90 degrees and roll the panorama by -quarter_turns * W / 4 columns
    (rounded when W is not a multiple of 4). See the module docstring for the convention.
    """
    if flip:
        pano, tile = pano.flip(-1), tile.flip(-1)
    r = int(quarter_turns) % 4
    if r:
        tile = torch.rot90(tile, r, dims=(-2, -1))
        pano = torch.roll(pano, shifts=-round(r * pano.shape[-1] / 4), dims=-1)
    return pano, tile


def tile_geometry(tile: torch.Tensor, flip: bool, quarter_turns: int) -> torch.Tensor:
    """Flip then rotate counter-clockwise by quarter_turns * 90 degrees one square-ish view."""
    if flip:
        tile = tile.flip(-1)
    return torch.rot90(tile, int(quarter_turns) % 4, dims=(-2, -1)) if quarter_turns % 4 else tile


def draw_geometry(rng: np.random.Generator) -> tuple[bool, int]:
    """(flip with p 0.5, quarter turns: 0 with p 0.25, else uniform in {1, 2, 3})."""
    flip = bool(rng.random() < P_FLIP)
    turns = int(rng.integers(1, 4)) if rng.random() < P_ROTATE else 0
    return flip, turns


class HueRotation:
    """Random hue shift of a float RGB image in [0, 1] by up to +-max_turn of a full turn.

    Rotates the chroma (I, Q) plane of YIQ by a uniform angle: a luma-preserving hue
    rotation, one 3x3 matrix per image (~1.6 ms for 384x384 on one core against ~10 ms for
    torchvision's RGB->HSV->RGB hue shift, which keeps V instead of luma). Both move colours
    around the hue circle; the paper's recipe only asks for hue jitter 0.15.
    """

    _TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(self, max_turn: float):
        self.max_turn = float(max_turn)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        theta = (float(torch.rand(())) * 2 - 1) * self.max_turn * 2 * math.pi
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
        m = np.linalg.inv(self._TO_YIQ) @ rot @ self._TO_YIQ
        out = torch.einsum("ij,j...->i...", torch.as_tensor(m, dtype=image.dtype), image)
        return out.clamp_(0.0, 1.0)


def photometric() -> v2.Compose:
    """Per-view augmentation: uint8 (3,H,W) in, ImageNet-normalised float32 out.

    JPEG quality 90-100 (p 0.5); colour jitter 0.15 in brightness, contrast, saturation and
    hue (p 0.5; hue via HueRotation); Gaussian blur or sharpening (p 0.3); then, after
    normalisation, coarse dropout: 8 small erased rectangles filled with the mean colour
    (p 0.3). Everything after the JPEG step runs in float, where torchvision's blur is ~5x
    faster than on uint8. Randomness comes from torch's default generator.
    """
    return v2.Compose([
        v2.RandomApply([v2.JPEG((90, 100))], p=0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomApply([v2.ColorJitter(0.15, 0.15, 0.15), HueRotation(0.15)], p=0.5),
        v2.RandomApply(
            [v2.RandomChoice([v2.GaussianBlur(5, sigma=(0.1, 1.5)), v2.RandomAdjustSharpness(2.0, p=1.0)])],
            p=0.3,
        ),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomApply(
            [v2.RandomErasing(p=1.0, scale=(0.002, 0.012), ratio=(0.5, 2.0), value=0.0) for _ in range(8)],
            p=0.3,
        ),
    ])


def normalise(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3,H,W) -> float32 (3,H,W) scaled to [0,1] and ImageNet-normalised."""
    return F.normalize(F.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)


def resize(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of (C,H,W) to size_hw = (H, W); no-op when already there."""
    if tuple(image.shape[-2:]) == tuple(size_hw):
        return image
    return F.resize(image, list(size_hw), antialias=True)


def eval_transform(
    size_hw: tuple[int, int], fov_deg: float | None = None
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """f(uint8 (3,H,W), heading_deg) -> float32 (3, *size_hw): [crop_fov,] resize, normalise."""
    check_fov(fov_deg)

    def apply(image: torch.Tensor, heading_deg: float = 0.0) -> torch.Tensor:
        if fov_deg is not None:
            image = crop_fov(image, fov_deg, heading_deg)
        return normalise(resize(image, size_hw))

    return apply


class TrainTransform:
    """Training transform of one pair: (ground uint8, aerial uint8, rng) -> float32 views.

    query_kind "panorama": paired flip/rotate (module docstring), then the panorama's field
    of view is cut at heading_deg when fov_deg is set. query_kind "drone": flip/rotate drawn
    independently for each view (drone photos are not north-aligned). Each view is then
    resized (ground to ground_size (H, W), aerial to aerial_size²) and, when augment, gets
    photometric(); otherwise it is only normalised.
    """

    def __init__(
        self,
        aerial_size: int,
        ground_size: tuple[int, int],
        *,
        query_kind: str = "panorama",
        augment: bool = True,
        fov_deg: float | None = None,
    ):
        if query_kind not in ("panorama", "drone"):
            raise ValueError(f"query_kind must be 'panorama' or 'drone', got {query_kind!r}")
        check_fov(fov_deg)
        self.aerial_hw = (int(aerial_size), int(aerial_size))
        self.ground_hw = (int(ground_size[0]), int(ground_size[1]))
        self.query_kind, self.augment, self.fov_deg = query_kind, augment, fov_deg
        self._photo = photometric() if augment else None

    def __call__(
        self, ground: torch.Tensor, aerial: torch.Tensor, rng: np.random.Generator, heading_deg: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment and self.query_kind == "panorama":
            ground, aerial = paired_geometry(ground, aerial, *draw_geometry(rng))
        elif self.augment:
            ground = tile_geometry(ground, *draw_geometry(rng))
            aerial = tile_geometry(aerial, *draw_geometry(rng))
        if self.fov_deg is not None and self.query_kind == "panorama":
            ground = crop_fov(ground, self.fov_deg, heading_deg)
        ground, aerial = resize(ground, self.ground_hw), resize(aerial, self.aerial_hw)
        if self._photo is None:
            return normalise(ground), normalise(aerial)
        return self._photo(ground), self._photo(aerial)
