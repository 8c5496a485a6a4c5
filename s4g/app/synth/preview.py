"""One aerial/panorama pair of the synthetic world side by side, for the README."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from s4g.app.synth import render as sr
from s4g.app.synth import world as sw
from s4g.fileio import atomic_path, png_mark


def preview_image(seed: int = 0, aerial: int = 200, pano_hw: tuple[int, int] = (200, 1100), **style) -> np.ndarray:
    """(H, W, 3) uint8: the aerial tile (camera marked red) left, the CVUSA-shaped panorama
    of the same street point right; 96 m tile, panorama range 48 m."""
    world = sw.make_world((384, 384), np.random.SeedSequence(seed, spawn_key=(9,)), **style)
    pts = sw.road_points(world, 40, 10.0, 60.0, np.random.default_rng(seed))
    # the street point with the most building cells within 30 m shows the most of the city
    near = [(world.kind[int(y) - 30:int(y) + 30, int(x) - 30:int(x) + 30] == sw.BUILDING).sum() for y, x in pts]
    y, x = pts[int(np.argmax(near))]
    a, p = sr.render_pair(world, y, x, aerial, pano_hw)
    a = a.copy()
    c = aerial // 2
    a[c - 2:c + 2, c - 2:c + 2] = (230, 30, 30)
    top = (pano_hw[0] - aerial) // 2
    canvas = np.full((max(aerial, pano_hw[0]), aerial + 8 + pano_hw[1], 3), 255, np.uint8)
    canvas[top:top + aerial, :aerial] = a
    canvas[:pano_hw[0], aerial + 8:] = p
    return canvas


def save_preview(path: str | os.PathLike, seed: int = 0, **style) -> None:
    """Write preview_image(seed, **style) as a PNG (about 100-200 KB) with s4g's mark."""
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(preview_image(seed, **style)).save(tmp, format="PNG", compress_level=1, pnginfo=png_mark())
