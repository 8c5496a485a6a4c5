"""Paired augmentation consistency, field-of-view cropping, and image decoding errors."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from s4g.errors import UserInputError
from s4g.pipeline.augment import IMAGENET_MEAN, normalise
from s4g.pipeline.images import load_image
from s4g.pipeline.transforms import (
    TrainTransform,
    crop_fov,
    draw_geometry,
    eval_transform,
    paired_geometry,
)


def colour_of(az_deg: np.ndarray, world_turn_deg: float) -> np.ndarray:
    """A smooth world seen only by direction: RGB (..., 3) in [0, 1] of compass azimuth."""
    a = np.radians(az_deg + world_turn_deg)
    return np.stack([0.5 + 0.5 * np.sin(a), 0.5 + 0.5 * np.cos(a), 0.5 + 0.25 * np.sin(2 * a + 0.3)], -1)


def render(world_turn_deg: float, mirror: bool = False, s: int = 16, h: int = 4, w: int = 32):
    """(panorama (3,h,w), north-up tile (3,s,s)) of the direction world, as float tensors.

    Panorama column x looks along az = (x + 0.5) * 360 / w - 180 (centre = north); tile
    pixel (row, col) lies in direction atan2(east, north) from the centre.
    """
    sign = -1.0 if mirror else 1.0
    az_p = (np.arange(w) + 0.5) * 360.0 / w - 180.0
    pano = np.broadcast_to(colour_of(sign * az_p, world_turn_deg)[None], (h, w, 3))
    c = (s - 1) / 2
    rows, cols = np.mgrid[0:s, 0:s]
    az_t = np.degrees(np.arctan2(cols - c, c - rows))
    tile = colour_of(sign * az_t, world_turn_deg)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()  # noqa: E731
    return as_t(pano), as_t(tile)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rotation_matches_rotated_world(turns):
    pano, tile = render(0.0)
    # Rotating the tile counter-clockwise by 90° brings what lay east (az 90) to the north.
    want_pano, want_tile = render(90.0 * turns)
    got_pano, got_tile = paired_geometry(pano, tile, flip=False, quarter_turns=turns)
    torch.testing.assert_close(got_tile, want_tile, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_pano, want_pano, atol=1e-5, rtol=0)


def test_flip_matches_mirrored_world_and_composes():
    pano, tile = render(0.0)
    got_pano, got_tile = paired_geometry(pano, tile, flip=True, quarter_turns=0)
    want_pano, want_tile = render(0.0, mirror=True)
    torch.testing.assert_close(got_tile, want_tile, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_pano, want_pano, atol=1e-5, rtol=0)
    # flip, then one counter-clockwise turn: the mirrored world f(-az) seen turned, i.e.
    # azimuth az now shows what the mirrored world had at az + 90: f(-az - 90).
    got_pano, got_tile = paired_geometry(pano, tile, flip=True, quarter_turns=1)
    want_pano, want_tile = render(-90.0, mirror=True)
    torch.testing.assert_close(got_tile, want_tile, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_pano, want_pano, atol=1e-5, rtol=0)


def test_draw_geometry_probabilities():
    rng = np.random.default_rng(0)
    draws = [draw_geometry(rng) for _ in range(4000)]
    flips = np.mean([f for f, _ in draws])
    turns = np.bincount([t for _, t in draws], minlength=4) / len(draws)
    assert abs(flips - 0.5) < 0.03
    assert abs(turns[0] - 0.25) < 0.03 and all(abs(t - 0.25) < 0.03 for t in turns[1:])


def test_train_transform_shapes_and_augment_off():
    g = torch.randint(0, 256, (3, 20, 80), dtype=torch.uint8)
    a = torch.randint(0, 256, (3, 30, 30), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    out_g, out_a, gp, ap = TrainTransform(16, (8, 32))(g, a, rng)
    assert out_g.shape == (3, 8, 32) and out_a.shape == (3, 16, 16) and out_g.dtype == torch.uint8
    assert gp.holes.shape == ap.holes.shape == (25, 4)
    plain_g, _, gp, _ = TrainTransform(16, (20, 80), augment=False)(g, a, rng)
    assert plain_g.equal(g) and int(gp.quality) == 0 and not bool(gp.colour) and int(gp.filter) == 0
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    torch.testing.assert_close(normalise(plain_g), (g.float() / 255 - mean) / std)
    fov_g, *_ = TrainTransform(16, (20, 20), augment=False, fov_deg=90)(g, a, rng)
    assert fov_g.equal(plain_g[:, :, 30:50])
    d_g, d_a, *_ = TrainTransform(16, (12, 12), query_kind="drone")(a, a, rng)
    assert d_g.shape == (3, 12, 12) and d_a.shape == (3, 16, 16)


def test_decode_sizes_cover_the_crop_and_the_turns():
    assert TrainTransform(384, (384, 768)).decode_sizes() == ((384, 768), (384, 384))
    assert TrainTransform(384, (140, 192), fov_deg=90).decode_sizes() == ((140, 768), (384, 384))
    assert TrainTransform(384, (256, 320), query_kind="drone").decode_sizes() == ((320, 320), (384, 384))


# ---- crop_fov ------------------------------------------------------------------------------

def test_crop_fov_centre_width_and_wrap():
    w = 64
    pano = torch.arange(w).repeat(2, 3, 1)  # (2, 3, 64): value = column
    north = crop_fov(pano, 90, 0)
    assert north.shape == (2, 3, 16) and north[0, 0].tolist() == list(range(24, 40))
    south = crop_fov(pano, 90, 180)  # straddles the seam
    assert south[0, 0].tolist() == list(range(56, 64)) + list(range(8))
    assert crop_fov(pano, 90, -180).equal(south) and crop_fov(pano, 90, 540).equal(south)
    assert crop_fov(pano, 360, 0).equal(pano)
    east = crop_fov(pano, 45, 90)
    assert east[0, 0].tolist() == list(range(44, 52))  # centred on 3W/4


@pytest.mark.parametrize("k", [1, 5, 17, 40, 63])
@pytest.mark.parametrize("fov", [30.0, 90.0, 127.5, 360.0])
def test_crop_fov_heading_shift_is_circular_shift(k, fov):
    w = 64
    pano = torch.randn(3, 5, w)
    heading = 33.75  # a multiple of 360 / 64, so shifts are whole columns
    a = crop_fov(pano, fov, heading + 360.0 * k / w)
    b = crop_fov(torch.roll(pano, -k, dims=-1), fov, heading)
    assert a.equal(b)
    assert a.shape[-1] == max(1, math.floor(w * fov / 360 + 0.5))


@pytest.mark.parametrize("fov", [0, -10, 400])
def test_crop_fov_rejects_bad_fov(fov):
    with pytest.raises(UserInputError, match="--fov"):
        crop_fov(torch.zeros(3, 2, 8), fov, 0)


def test_eval_transform_fov():
    pano = torch.randint(0, 256, (3, 8, 64), dtype=torch.uint8)
    out = eval_transform((8, 16), fov_deg=90)(pano, 180.0)
    want = eval_transform((8, 16))(torch.cat([pano[..., 56:], pano[..., :8]], -1))
    assert out.dtype == torch.uint8 and out.equal(want)


# ---- decoding ------------------------------------------------------------------------------

def _jpeg_bytes() -> bytes:
    arr = (np.random.default_rng(0).random((24, 40, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_load_image_good_grey_and_rgba(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_jpeg_bytes())
    img = load_image(tmp_path / "a.jpg")
    assert img.shape == (3, 24, 40) and img.dtype == torch.uint8
    Image.fromarray(np.full((5, 7), 200, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png")[:, 0, 0].tolist() == [200, 200, 200]
    Image.fromarray(np.full((5, 7, 4), 9, np.uint8)).save(tmp_path / "r.png")
    assert load_image(tmp_path / "r.png").shape == (3, 5, 7)


def test_load_image_errors_name_the_file(tmp_path):
    data = _jpeg_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="trunc.jpg"):
        load_image(tmp_path / "trunc.jpg")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 30)
    with pytest.raises(UserInputError, match="junk.png"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserInputError, match="empty.jpg"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(UserInputError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


# ---- against the synthetic renderer ------------------------------------------------------

@pytest.mark.parametrize("turns", [1, 2, 3])
def test_paired_geometry_matches_rendered_rotated_world(turns):
    """Render a pair, turn the synthetic world by `turns` quarter turns, render the same spot
    again: the paired transform of the first pair must equal the second, bit for bit."""
    from s4g.app.synth import render as synth_render
    from s4g.app.synth import world as sw

    world = sw.make_world((160, 160), 7)
    y, x = 83.0, 77.0
    aerial, pano = synth_render.render_pair(world, y, x, 32, (16, 64))
    turned = sw.rotate_world(world, turns)
    ty, tx = sw.rotate_point(world.shape, y, x, turns)
    want_aerial, want_pano = synth_render.render_pair(turned, ty, tx, 32, (16, 64))
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)  # noqa: E731
    assert not to_t(want_pano).equal(to_t(pano))  # the turn is visible
    got_pano, got_tile = paired_geometry(to_t(pano), to_t(aerial), False, turns)
    assert got_tile.equal(to_t(want_aerial))
    assert got_pano.equal(to_t(want_pano))


def test_train_transform_keeps_pairs_consistent():
    """Whatever flip/turn TrainTransform draws, its two outputs still show one world: the
    direction world mirrored and/or turned the same way in both views."""
    u8 = lambda t: (t * 255).round().to(torch.uint8)  # noqa: E731
    pano, tile = render(0.0)
    candidates = []
    for mirror in (False, True):
        for turn in (0.0, 90.0, 180.0, 270.0):
            p, t = render(turn if not mirror else -turn, mirror=mirror)
            candidates.append((u8(p), u8(t)))
    tf = TrainTransform(16, (4, 32))  # host part: geometry; photometric parameters are per view
    seen = set()
    for seed in range(24):
        g, a, _, _ = tf(u8(pano), u8(tile), np.random.default_rng(seed))
        hits = [k for k, (cp, ct) in enumerate(candidates) if g.equal(cp) and a.equal(ct)]
        assert hits, f"seed {seed}: the views were transformed inconsistently"
        seen.add(hits[0])
    assert len(seen) >= 6  # flips and turns were all exercised


def test_train_transform_turns_after_the_resize_as_paired_geometry_before_it():
    """TrainTransform turns the square views after resizing them (cheaper): the same images as
    paired_geometry followed by the resize, up to the resize's rounding."""
    from test_images import photo

    from s4g.pipeline.transforms import resize

    pano, tile = photo(40, 160, 1), photo(48, 48, 2)
    seen = set()
    for seed in range(16):
        flip, turns = draw_geometry(np.random.default_rng(seed))
        seen.add((flip, turns))
        g, a, _, _ = TrainTransform(20, (16, 64))(pano, tile, np.random.default_rng(seed))
        want_g, want_a = paired_geometry(pano, tile, flip, turns)
        assert g.equal(resize(want_g, (16, 64)))
        assert (a.int() - resize(want_a, (20, 20)).int()).abs().max() <= 1
    assert len(seen) >= 6
