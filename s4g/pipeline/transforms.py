"""Image transforms on the host: paired geometric augmentation, limited field of view, the
resize to the model's size, and the draw of each view's photometric parameters (applied to
the batch on the training device: s4g.pipeline.augment).

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

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from s4g.errors import UserInputError
from s4g.flags import Flag
from s4g.pipeline.augment import (
    GRID_RATIO_PANORAMA,
    GRID_RATIO_TILE,
    PhotoParams,
    draw_photometric,
    no_photometric,
)

P_FLIP = 0.5
P_ROTATE = 0.75


def check_fov(fov_deg: float | None) -> None:
    """UserInputError unless fov_deg is None or in (0, 360]."""
    if fov_deg is not None and not (0 < float(fov_deg) <= 360):
        raise UserInputError(f"{Flag.FOV} must be in (0, 360] degrees, got {fov_deg}.")


def fov_width(width: int, fov_deg: float) -> int:
    """Columns of a width-column panorama that a fov_deg (in (0, 360]) field of view covers:
    round(width * fov_deg / 360), halves up, at least 1 and at most width."""
    width = int(width)
    return max(1, min(width, math.floor(width * float(fov_deg) / 360.0 + 0.5)))


def fov_size(ground_size: tuple[int, int], fov_deg: float | None) -> tuple[int, int]:
    """(H, w) the model sees a fov_deg crop of a ground_size (H, W) panorama at: the height
    kept and w = fov_width(W, fov_deg), the width crop_fov cuts, so a limited view is never
    stretched to the panorama's width (as TransGeo/ConGeo crop). None -> (H, W)."""
    h, w = int(ground_size[0]), int(ground_size[1])
    if fov_deg is None:
        return h, w
    check_fov(fov_deg)
    return h, fov_width(w, fov_deg)


def uncropped_size(size_hw: tuple[int, int], fov_deg: float | None) -> tuple[int, int]:
    """(H, W) of the whole panorama whose fov_deg crop is size_hw (H, w) at the same scale:
    W = ceil(w * 360 / fov_deg) (size_hw itself when fov_deg is None). The size a panorama
    must be decoded at least at, to be only shrunk afterwards."""
    h, w = int(size_hw[0]), int(size_hw[1])
    return (h, w) if fov_deg is None else (h, math.ceil(w * 360.0 / float(fov_deg)))


@dataclass(frozen=True)
class View:
    """What the model is shown of each image: the size each kind of image is fed at and the
    part of a panorama it sees. Built once from the run config or the command line, and
    passed to the datasets and to s4g.retrieval.embed.

    aerial_size: side of the square aerial tile, pixels.
    ground_size: (H, W) of the whole ground image, pixels: a panorama before the
      field-of-view cut, or a drone photo.
    fov: horizontal field of view cut from each panorama, degrees in (0, 360] (None = the
      whole panorama); the cut keeps the panorama's scale (fov_size). Drone photos and
      aerial tiles are never cut.
    heading_deg: compass heading of the cut's centre, degrees clockwise from north (None =
      north).
    random_heading: instead, a heading drawn uniformly from [0, 360) per image, from (seed,
      image index) (s4g.pipeline.dataset).
    seed: the seed of those draws; in training, of every per-pair draw.
    """

    aerial_size: int
    ground_size: tuple[int, int]
    fov: float | None = None
    heading_deg: float | None = None
    random_heading: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_fov(self.fov)
        object.__setattr__(self, "aerial_size", int(self.aerial_size))
        object.__setattr__(self, "ground_size", (int(self.ground_size[0]), int(self.ground_size[1])))
        object.__setattr__(self, "seed", int(self.seed))

    def fov_of(self, kind: str) -> float | None:
        """The field of view (degrees) cut from images of `kind` ("panorama", "drone" or
        "aerial"): fov for panoramas, None (the whole image) for the others."""
        return self.fov if kind == "panorama" else None

    def size(self, kind: str) -> tuple[int, int]:
        """(H, W) pixels the model is fed images of `kind` at: "aerial" an aerial_size square,
        "drone" ground_size (square in University-1652's presets, as in training), "panorama"
        ground_size cut to the field of view (fov_size)."""
        if kind == "aerial":
            return self.aerial_size, self.aerial_size
        if kind == "drone":
            return self.ground_size
        if kind == "panorama":
            return fov_size(self.ground_size, self.fov)
        raise ValueError(f"unknown image kind {kind!r}; expected panorama, drone or aerial")

    def whole(self) -> View:
        """The same sizes, every image seen whole (no field-of-view cut, no heading)."""
        return View(self.aerial_size, self.ground_size, seed=self.seed)


def crop_fov(pano: torch.Tensor, fov_deg: float, heading_deg: float) -> torch.Tensor:
    """The part of a north-aligned panorama seen with a horizontal field of view.

    pano: (C, H, W) any dtype; fov_deg in (0, 360]; heading_deg: compass direction of the
    view's centre, clockwise from north (0 = the panorama's centre column), any real value.
    Returns (C, H, w) with w = fov_width(W, fov_deg), wrapping around the seam.
    Turning the heading by 360 * k / W degrees equals rolling the panorama by -k columns.
    """
    check_fov(fov_deg)
    width = pano.shape[-1]
    w = fov_width(width, fov_deg)
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
    return roll_panorama(pano, r), tile


def roll_panorama(pano: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """pano (C, H, W) rolled by -quarter_turns * W / 4 columns (rounded): the panorama half of
    a quarter turn. Rolled as (H, W, C) so that a decoder's channels-innermost layout, which
    torch's uint8 resize is fastest on, survives."""
    r = int(quarter_turns) % 4
    if not r:
        return pano
    return torch.roll(pano.permute(1, 2, 0), shifts=-round(r * pano.shape[-1] / 4), dims=1).permute(2, 0, 1)


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


def resize(image: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of (C,H,W) to size_hw = (H, W); no-op when already there."""
    if tuple(image.shape[-2:]) == tuple(size_hw):
        return image
    return F.resize(image, list(size_hw), antialias=True)


def eval_transform(
    size_hw: tuple[int, int], fov_deg: float | None = None
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """f(uint8 (3,H,W), heading_deg) -> uint8 (3, *size_hw): [crop_fov,] resize. The batch is
    normalised on the model's device (s4g.pipeline.augment.normalise)."""
    check_fov(fov_deg)
    # A partial of a module-level function, not a closure: DataLoader workers started by
    # `spawn` (macOS, Windows) receive the dataset, and with it this transform, pickled.
    return functools.partial(_eval_apply, (int(size_hw[0]), int(size_hw[1])), fov_deg)


def _eval_apply(size_hw: tuple[int, int], fov_deg: float | None, image: torch.Tensor,
                heading_deg: float = 0.0) -> torch.Tensor:
    if fov_deg is not None:
        image = crop_fov(image, fov_deg, heading_deg)
    return resize(image, size_hw)


class TrainTransform:
    """The host part of one pair's training transform: (ground uint8, aerial uint8, rng) ->
    (ground uint8 (3, *ground_size), aerial uint8 (3, S, S), their PhotoParams).

    query_kind "panorama": paired flip/rotate (module docstring), then the panorama's field
    of view is cut at heading_deg when fov_deg is set. query_kind "drone": flip/rotate drawn
    independently for each view (drone photos are not north-aligned). Each view is then
    resized (ground to ground_size (H, W), aerial to aerial_size²) and, when augment, gets
    photometric parameters drawn from rng (s4g.pipeline.augment.draw_photometric; a panorama's
    GridDropout has the reference's ratio 0.5, a tile's or a drone photo's 0.4); otherwise
    parameters that only normalise. s4g.pipeline.augment.augment_batch applies them.
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

    def decode_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The least (H, W) the decoded ground and aerial images must have for this transform
        to only shrink them: before the field-of-view cut (W * 360 / fov), and square where a
        quarter turn may swap the sides."""
        if self.query_kind == "drone":
            side = max(self.ground_hw)
            return (side, side), self.aerial_hw
        return uncropped_size(self.ground_hw, self.fov_deg), self.aerial_hw

    def __call__(
        self, ground: torch.Tensor, aerial: torch.Tensor, rng: np.random.Generator, heading_deg: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, PhotoParams, PhotoParams]:
        # paired_geometry / tile_geometry, in a cheaper order: a quarter turn of a view resized
        # to a square is applied after the resize (each side scales to the same length either
        # way), on the smaller image and without a layout the resize is slow on.
        ground_turns = aerial_turns = 0
        if self.augment and self.query_kind == "panorama":
            flip, aerial_turns = draw_geometry(rng)
            if flip:
                ground, aerial = ground.flip(-1), aerial.flip(-1)
            ground = roll_panorama(ground, aerial_turns)
        elif self.augment:
            (ground_flip, ground_turns), (aerial_flip, aerial_turns) = draw_geometry(rng), draw_geometry(rng)
            ground = tile_geometry(ground, ground_flip, 0)
            aerial = tile_geometry(aerial, aerial_flip, 0)
            if self.ground_hw[0] != self.ground_hw[1]:
                ground, ground_turns = tile_geometry(ground, False, ground_turns), 0
        if self.fov_deg is not None and self.query_kind == "panorama":
            ground = crop_fov(ground, self.fov_deg, heading_deg)
        ground, aerial = resize(ground, self.ground_hw), resize(aerial, self.aerial_hw)
        ground, aerial = tile_geometry(ground, False, ground_turns), tile_geometry(aerial, False, aerial_turns)
        if not self.augment:
            return ground, aerial, no_photometric(), no_photometric()
        ground_ratio = GRID_RATIO_PANORAMA if self.query_kind == "panorama" else GRID_RATIO_TILE
        return (ground, aerial, draw_photometric(rng, self.ground_hw, ground_ratio),
                draw_photometric(rng, self.aerial_hw, GRID_RATIO_TILE))
