"""Reduced-size JPEG decoding: how far it lies from a full decode + resize, and when it applies."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.nn import functional as nnf

from s4g.errors import UserInputError
from s4g.pipeline.images import SCALED_DECODE_MIN_PIXELS, load_image
from s4g.pipeline.transforms import resize


def photo(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """uint8 (3, h, w) with a photograph's mix of smooth areas, edges and fine texture."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((1, 3, h, w), 128.0)
    for cell, amp in ((128, 40), (32, 20), (8, 10), (2, 4)):
        noise = torch.randn(1, 3, h // cell + 2, w // cell + 2, generator=g)
        img += amp * nnf.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    return img.clamp(0, 255).round().to(torch.uint8)[0]


def _save(path, image: torch.Tensor, quality: int = 90) -> str:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=quality)
    return str(path)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    # 1408 × 736 ≈ 1.04 MP: just above the threshold; 1/2 scale still covers 512 × 256
    return _save(tmp_path_factory.mktemp("img") / "big.jpg", photo(736, 1408))


def test_reduced_decode_is_close_to_full_decode_and_resize(big_jpeg):
    full = load_image(big_jpeg)
    reduced = load_image(big_jpeg, (256, 512))
    assert full.shape == (3, 736, 1408) and reduced.shape == (3, 368, 704)  # DCT scale 1/2
    diff = (resize(reduced, (256, 512)).float() - resize(full, (256, 512)).float()).abs()
    # The stated amount: 0.43 grey levels on average, at most 4 on this image.
    assert diff.mean() < 0.6 and diff.max() <= 8
    assert load_image(big_jpeg, (150, 300)).shape == (3, 184, 352)  # 1/4 still covers 150 × 300


def test_full_decode_where_no_scale_applies(big_jpeg, tmp_path):
    full = load_image(big_jpeg)
    assert load_image(big_jpeg, (400, 512)).equal(full)  # 1/2 would give 368 rows < 400
    small = _save(tmp_path / "small.jpg", photo(256, 512))  # under SCALED_DECODE_MIN_PIXELS
    assert 256 * 512 < SCALED_DECODE_MIN_PIXELS
    assert load_image(small, (64, 128)).equal(load_image(small))


def test_reduced_decode_of_grey_jpeg_and_bad_file(tmp_path):
    grey = tmp_path / "grey.jpg"
    Image.fromarray(photo(736, 1408)[0].numpy()).save(grey, quality=90)
    out = load_image(grey, (256, 512))
    assert out.shape == (3, 368, 704) and out[0].equal(out[1]) and out[1].equal(out[2])
    data = open(big := _save(tmp_path / "b.jpg", photo(736, 1408)), "rb").read()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserInputError, match="trunc.jpg"):
        load_image(tmp_path / "trunc.jpg", (256, 512))
    assert load_image(big, (256, 512)).shape == (3, 368, 704)
