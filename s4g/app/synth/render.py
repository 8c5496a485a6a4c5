"""Renderers of the synthetic world: aerial tile, ground panorama, oblique drone view.

Views (all uint8 RGB arrays, (H, W, 3)); frame and azimuths as in s4g.app.synth.world:
- aerial tile: north-up (row 0 is the north edge), centred on the location, `width_m` wide,
  nearest-cell sampling.
- panorama: equirectangular and north-aligned like CVUSA: column c looks toward azimuth
  ((c + 0.5) / W - 0.5) * 360 degrees, so the centre column faces north and east is to its
  right (W / 4 columns per quarter turn); rows span the elevations +-180 * H / W degrees
  around the horizon (2:1 = the full sphere). Rays are marched in 0.5 m steps over the height
  map up to `range_m` (the tile's half-width), so a panorama shows only what its tile holds.
- drone view: an oblique parallel projection looking along a heading, tilted down.
Every view marches rays over the height map column by column: the first sample whose top
reaches a row's screen coordinate is that pixel's hit (a step up of more than 1 m is a facade,
shaded by its orientation to the sun, with windows; otherwise the top colour).
"""

from __future__ import annotations

import numpy as np

from s4g.app.synth.world import BUILDING, HAZE, SKY_HORIZON, SKY_ZENITH, World, sun_vector
from s4g.errors import UserInputError


def _cells(world: World, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Flat index (row * W + col) of the cells holding points (ys, xs), clamped to the map."""
    h, w = world.shape
    return np.clip(ys.astype(np.intp) - (ys < 0), 0, h - 1) * w + np.clip(xs.astype(np.intp) - (xs < 0), 0, w - 1)


def render_aerial(world: World, y: float, x: float, size: int, width_m: float = 96.0) -> np.ndarray:
    """North-up (size, size, 3) uint8 tile centred on (y, x), `width_m` metres wide."""
    offs = (np.arange(size) + 0.5 - size / 2) * (width_m / size)
    h, w = world.shape
    iy = np.clip(np.floor(y + offs), 0, h - 1).astype(np.intp)
    ix = np.clip(np.floor(x + offs), 0, w - 1).astype(np.intp)
    return np.take(np.take(world.top, iy, axis=0), ix, axis=1)  # two 1-D takes: cheaper than 2-D fancy indexing


def _first_hit(s_top: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """(R, C) int32 index of the first sample k with s_top[c, k] >= thr[r] (K when none).

    s_top (C, K) screen coordinate of each sample's top along each column's ray; thr (R,)
    strictly decreasing. With the running maximum m_k of a column, the rows a sample k does
    not reach are the first rho_k rows (thr > m_k), rho non-increasing in k, so the hit index
    of row r is #{k: rho_k > r}: one small searchsorted, a bincount and a cumulative sum."""
    C, K = s_top.shape
    R = len(thr)
    run = np.maximum.accumulate(s_top, axis=1)
    rho = R - np.searchsorted(thr[::-1], run, side="right")  # rows with thr > run
    counts = np.bincount((np.arange(C)[:, None] * (R + 1) + rho).ravel(), minlength=C * (R + 1))
    above = np.cumsum(counts.reshape(C, R + 1)[:, ::-1], axis=1)[:, ::-1]  # #{k: rho_k >= j}
    return np.ascontiguousarray(above[:, 1:].T, dtype=np.int32)


def _composite(world: World, ys, xs, cell, idx, z_at, fog=None, miss=None) -> np.ndarray:
    """(R, C, 3) uint8 colour of the first hits. Samples (C, K) at (ys, xs) in flat cells
    `cell`; idx (R, C) from _first_hit; z_at(k, r) height of row r's ray at sample k (1-D
    arrays; window floors); fog (K,) haze weight per sample or None; miss (R, 3) colour of
    rows whose ray hits nothing. Facades (a step up of more than 1 m: steeper than any roof)
    are shaded by their orientation to the sun, only at the pixels that show one."""
    C, K = ys.shape
    k = np.minimum(idx, K - 1)
    flat = np.arange(C, dtype=np.int32)[None, :] * K + k
    prev = flat - (k > 0)
    cell_f = cell.ravel()
    hflat = world.height.ravel()
    wall = (idx < K) & (hflat[cell_f[flat]] > hflat[cell_f[prev]] + 1.0)  # steeper than any roof
    top = world.top.reshape(-1, 3)[cell]  # (C, K, 3) uint8
    if fog is not None:
        top = (top * (1 - fog)[None, :, None] + HAZE * fog[None, :, None]).astype(np.uint8)
    # gather 4-byte pixels (one load each) rather than rows of 3 bytes
    packed = np.zeros((C * K, 4), np.uint8)
    packed[:, :3] = top.reshape(-1, 3)
    rgb = np.ascontiguousarray(packed.view(np.uint32).ravel()[flat][..., None].view(np.uint8)[..., :3])
    wi = np.flatnonzero(wall)
    if len(wi):
        a, b = prev.ravel()[wi], flat.ravel()[wi]
        ny, nx = _face_normal(world, ys.ravel()[a], xs.ravel()[a], ys.ravel()[b], xs.ravel()[b])
        s = sun_vector(world.sun_azimuth, world.sun_elevation)
        lam = np.clip((ny * s[0] + nx * s[1]) / np.hypot(s[0], s[1]), 0, 1)
        shade = 1 - world.shading * (0.5 - 0.5 * lam)
        cw = cell_f[b]
        if world.windows:
            along = np.where(ny != 0, xs.ravel()[b], ys.ravel()[b])
            z = z_at(b % K, wi // C)
            zf = np.mod(z, 3.2)
            win = (np.abs(np.mod(along, 4.0) - 2.0) < 0.7) & (zf > 1.1) & (zf < 2.3) & (z > 3.0)
            shade = np.where(win & (world.kind.ravel()[cw] == BUILDING), shade * 0.55, shade)
        c = world.wall.reshape(-1, 3)[cw] * shade[:, None].astype(np.float32)
        if fog is not None:
            f = fog[b % K][:, None].astype(np.float32)
            c = c * (1 - f) + HAZE * f
        rgb.reshape(-1, 3)[wi] = np.clip(c, 0, 255).astype(np.uint8)
    if miss is not None:
        np.copyto(rgb, miss[:, None, :].astype(np.uint8), where=(idx >= K)[..., None])
    return rgb


def _face_normal(world: World, ya, xa, yb, xb):
    """Unit normal (ny, nx) of the wall face that a ray stepping from (ya, xa) (low) to
    (yb, xb) (tall) meets, pointing back at the viewer. When the step changes row and column,
    the ray passes a corner cell between them: if that cell is tall too, the wall is the
    boundary crossed first, else the one crossed second."""
    ca, cb = (np.floor(ya), np.floor(xa)), (np.floor(yb), np.floor(xb))
    dy, dx = cb[0] - ca[0], cb[1] - ca[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ty = (np.maximum(ca[0], cb[0]) - ya) / (yb - ya)
        tx = (np.maximum(ca[1], cb[1]) - xa) / (xb - xa)
    y_first = ty < tx
    corner = _cells(world, np.where(y_first, cb[0], ca[0]) + 0.5, np.where(y_first, ca[1], cb[1]) + 0.5)
    h = world.height.ravel()
    tall = h[corner] > h[_cells(world, ya, xa)] + 1.0
    use_y = np.where((dy != 0) & (dx != 0), y_first == tall, dy != 0)
    return np.where(use_y, -np.sign(dy), 0.0), np.where(use_y, 0.0, -np.sign(dx))


def _column_dirs(W: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions (dy, dx) of panorama columns, built from the first quarter by exact
    quarter turns so that the rotation law holds bit for bit."""
    az = np.radians(((np.arange(W // 4) + 0.5) / W - 0.5) * 360.0)
    dy, dx = -np.cos(az), np.sin(az)
    qy, qx = [dy], [dx]
    for _ in range(3):
        dy, dx = dx, -dy
        qy.append(dy)
        qx.append(dx)
    return np.concatenate(qy), np.concatenate(qx)


def render_panorama(world: World, y: float, x: float, hw: tuple[int, int], *, eye_m: float = 2.0,
                    range_m: float = 48.0, step_m: float = 0.5) -> np.ndarray:
    """North-aligned equirectangular (H, W, 3) uint8 panorama from (y, x) at `eye_m` height.

    W must be a multiple of 4 (quarter turns are exact column shifts); the vertical field of
    view is 360 * H / W degrees centred on the horizon; distant hits fade into haze."""
    H, W = hw
    if W % 4:
        raise UserInputError(f"panorama width must be a multiple of 4, got {W}.")
    dy, dx = _column_dirs(W)
    d = (np.arange(int(round(range_m / step_m))) + 0.5) * step_m
    ys, xs = y + dy[:, None] * d[None, :], x + dx[:, None] * d[None, :]
    cell = _cells(world, ys, xs)
    s_top = np.arctan2(world.height.ravel()[cell] - eye_m, d[None, :])
    theta = np.radians((0.5 - (np.arange(H) + 0.5) / H) * 360.0 * H / W)
    idx = _first_hit(s_top, theta)
    tan = np.tan(np.clip(theta, -1.5, 1.5))
    up = np.clip(np.sin(theta), 0, 1)[:, None]
    miss = np.where((theta >= 0)[:, None], SKY_HORIZON * (1 - up) + SKY_ZENITH * up, HAZE)
    return _composite(world, ys, xs, cell, idx, lambda kk, rr: eye_m + d[kk] * tan[rr],
                      fog=0.4 * (d / range_m) ** 2, miss=miss)


def render_oblique(world: World, y: float, x: float, size: int, heading_deg: float, tilt_deg: float,
                   width_m: float = 96.0, step_m: float = 0.5) -> np.ndarray:
    """(size, size, 3) uint8 oblique parallel view centred on ground point (y, x), looking
    toward azimuth `heading_deg`, tilted `tilt_deg` (10..75) below the horizon."""
    if not 10.0 <= tilt_deg <= 75.0:
        raise UserInputError(f"drone tilt must be in [10, 75] degrees, got {tilt_deg}.")
    phi, psi = np.radians(tilt_deg), np.radians(heading_deg)
    sin, cos = np.sin(phi), np.cos(phi)
    g = width_m / size
    lateral = (np.arange(size) + 0.5 - size / 2) * g
    reach = width_m / 2 / sin
    t = np.arange(-reach - float(world.height.max()) * cos / sin - 2, reach + 2, step_m)
    fy, fx, ry, rx = -np.cos(psi), np.sin(psi), np.sin(psi), np.cos(psi)
    ys = y + lateral[:, None] * ry + t[None, :] * fy
    xs = x + lateral[:, None] * rx + t[None, :] * fx
    cell = _cells(world, ys, xs)
    s_top = t[None, :] * sin + world.height.ravel()[cell] * cos
    s_row = (size / 2 - np.arange(size) - 0.5) * g
    idx = _first_hit(s_top, s_row)
    miss = np.broadcast_to(HAZE, (size, 3))
    return _composite(world, ys, xs, cell, idx, lambda kk, rr: (s_row[rr] - t[kk] * sin) / cos, miss=miss)


def render_pair(world: World, y: float, x: float, aerial_size: int, pano_hw: tuple[int, int], *,
                width_m: float = 96.0, eye_m: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(aerial (S, S, 3), panorama (H, W, 3)) uint8 of one location; the panorama sees up to
    the tile's half-width."""
    return (render_aerial(world, y, x, aerial_size, width_m),
            render_panorama(world, y, x, pano_hw, eye_m=eye_m, range_m=width_m / 2))
