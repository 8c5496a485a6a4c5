"""A procedural 2.5-D city on a 1 m height map (renderers: s4g.app.synth.render).

Frame: cell (i, j) covers [i, i+1) x [j, j+1) metres; a position (y, x) has y growing
southward (the row) and x eastward (the column). Azimuths are degrees clockwise from north
(0 = north = -y, 90 = east = +x).

A district has a street grid (roads 8-16 m wide between blocks of 40-95 m), blocks of
buildings (up to 3 x 3 lots; 5-40 m high; flat roofs with a parapet, gabled or hipped roofs),
parks, plazas and ponds, and trees on a jittered 8 m lattice. Sun shading of roofs and tree
crowns and cast shadows are baked into the colour seen from above (`top`); facades keep their
base colour (`wall`) and are shaded by orientation when rendered.

Rotation law (tested): rotate_world(world, k) turns the maps by np.rot90(., k) (counter-
clockwise, east becomes north) and the sun with them; for the rotated location,
aerial' = np.rot90(aerial, k) and panorama' = np.roll(panorama, -k * W // 4, axis=1).

Every step is vectorised numpy; Python loops run only over roads, shadow steps or candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from s4g.errors import UserInputError


def _hsv_to_rgb_rows(hsv: np.ndarray) -> np.ndarray:
    """(N, 3) HSV in [0, 1] -> (N, 3) float32 RGB in [0, 1]."""
    h, s, v = hsv[:, 0] * 6, hsv[:, 1], hsv[:, 2]
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(i))].astype(np.float32)


GROUND, ROAD, SIDEWALK, GRASS, WATER, BUILDING, TREE, PLAZA = range(8)
PALETTES = ("unique", "paired", "shared")
# Ten roof and ten facade materials: with palette="shared" roof and walls are drawn
# independently, so colour alone no longer identifies a building.
ROOF_MATERIALS = np.array(
    [[120, 120, 125], [70, 72, 78], [170, 85, 60], [120, 80, 55], [95, 105, 120],
     [95, 145, 125], [45, 45, 48], [200, 200, 195], [205, 190, 160], [150, 50, 45]], np.float32)
FACADE_MATERIALS = np.array(
    [[235, 232, 225], [225, 210, 170], [160, 75, 55], [125, 85, 65], [150, 150, 150],
     [200, 175, 130], [235, 220, 140], [165, 195, 215], [55, 75, 110], [220, 170, 170]], np.float32)
_HUES = np.arange(12) / 12.0
# palette="paired": roof and walls share one of 16 colours, so colour statistics say less
# about the place while the layout of colours around the camera still does.
PAIRED_MATERIALS = np.concatenate([
    _hsv_to_rgb_rows(np.stack([_HUES, np.full(12, 0.55), np.where(np.arange(12) % 2, 0.65, 0.85)], 1)),
    np.array([[0.92, 0.92, 0.9], [0.7, 0.7, 0.7], [0.45, 0.45, 0.47], [0.8, 0.72, 0.6]], np.float32)]) * 255
_BASE = {ROAD: (72, 73, 78), SIDEWALK: (168, 165, 158), GRASS: (82, 130, 62), WATER: (50, 95, 140),
         PLAZA: (186, 174, 150), GROUND: (140, 130, 110), TREE: (42, 96, 44)}
SKY_HORIZON = np.array([205, 218, 235], np.float32)
SKY_ZENITH = np.array([85, 135, 205], np.float32)
HAZE = np.array([172, 180, 186], np.float32)


@dataclass(frozen=True)
class World:
    """One district. height (H, W) float32 metres; top (H, W, 3) uint8 colour seen from above
    (shading and cast shadows baked in); wall (H, W, 3) uint8 facade colour; kind (H, W) uint8;
    sun azimuth/elevation in degrees; buildings (B, 3) float64 rows (y, x, eave height) of the
    footprint centroids of buildings of at least 100 m2; shading in [0, 1] scales facade
    orientation shading; windows draws window bands on facades."""

    height: np.ndarray
    top: np.ndarray
    wall: np.ndarray
    kind: np.ndarray
    sun_azimuth: float
    sun_elevation: float
    buildings: np.ndarray
    shading: float = 0.5
    windows: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        return self.height.shape


def _lines(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Split [0, n) metres into blocks between roads; per-metre arrays of the 1-D layout."""
    starts, widths, pos = [], [], -float(rng.uniform(0, 50))
    while pos < n:
        w = float(rng.choice([8.0, 10.0, 12.0, 16.0]))
        starts.append(pos)
        widths.append(w)
        pos += w + float(rng.uniform(40, 95))
    start_m, width_m = np.array(starts), np.array(widths)
    m = np.arange(n) + 0.5
    r = np.searchsorted(start_m, m, side="right") - 1  # road at or before m
    off = m - start_m[r]
    road = off < width_m[r]
    block_start = start_m[r] + width_m[r]
    nxt = np.append(start_m, max(pos, n + 40.0))[r + 1]
    f32 = lambda a: a.astype(np.float32)  # noqa: E731  (the (H, W) maps built from these stay float32)
    return {"road": road, "road_off": f32(off), "road_w": f32(width_m[r]), "block": r,
            "off": f32(m - block_start), "len": f32(nxt - block_start)}


def road_layout(seed: np.random.SeedSequence, shape: tuple[int, int]):
    """(ly, lx) 1-D layouts of a district's roads; drawn from a child seed of `seed` so that
    location planning can use the roads without building the whole world."""
    rng = np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, 0)))
    return _lines(rng, shape[0]), _lines(rng, shape[1])


def _lots(rng, ly, lx):
    """Per-cell lot geometry and per-lot parameters of building blocks."""
    nby, nbx = ly["block"].max() + 2, lx["block"].max() + 2
    nb = nby * nbx
    block = (ly["block"][:, None] + 1) * nbx + (lx["block"][None, :] + 1)
    btype = rng.choice(4, size=nb, p=[0.78, 0.12, 0.05, 0.05])  # buildings, park, water, plaza
    nly, nlx = rng.integers(1, 4, nb), rng.integers(1, 4, nb)  # up to 3 x 3 lots a block
    fy = np.clip(ly["off"] / ly["len"], 0, 0.999999)[:, None]
    fx = np.clip(lx["off"] / lx["len"], 0, 0.999999)[None, :]
    cy, cx = nly[block], nlx[block]
    qy, qx = fy * cy, fx * cx
    iy, ix = np.floor(qy), np.floor(qx)
    lot_h, lot_w = ly["len"][:, None] / cy, lx["len"][None, :] / cx
    # metres from the cell to the nearer lot edge along each axis
    ey = np.minimum(qy - iy, 1 - (qy - iy)) * lot_h
    ex = np.minimum(qx - ix, 1 - (qx - ix)) * lot_w
    lot = block * 9 + (iy * 3 + ix).astype(np.int64)
    return block, btype, lot, ey, ex, lot_h, lot_w


def _building_params(rng, n_lots: int, palette: str):
    u = rng.random(n_lots)
    p = {"has": rng.random(n_lots) < 0.88, "h": (5 + 35 * u * u).astype(np.float32),
         "roof": rng.choice(3, n_lots, p=[0.5, 0.3, 0.2]), "setback": rng.uniform(2.5, 6.0, n_lots).astype(np.float32),
         "pitch": np.tan(np.radians(rng.uniform(22, 38, n_lots))).astype(np.float32)}
    if palette == "unique":
        hsv = np.stack([rng.random(n_lots), rng.uniform(0.25, 0.8, n_lots), rng.uniform(0.45, 0.95, n_lots)], 1)
        p["roof_rgb"] = p["wall_rgb"] = _hsv_to_rgb_rows(hsv) * 255
    elif palette == "paired":
        p["roof_rgb"] = p["wall_rgb"] = PAIRED_MATERIALS[rng.integers(0, len(PAIRED_MATERIALS), n_lots)]
    else:
        p["roof_rgb"] = ROOF_MATERIALS[rng.integers(0, 10, n_lots)]
        p["wall_rgb"] = FACADE_MATERIALS[rng.integers(0, 10, n_lots)]
    return p


def _trees(rng, shape, allowed: np.ndarray, density: np.ndarray):
    """Tree canopies on a jittered 8 m lattice: (height, canopy colour) per cell (0 = none)."""
    ny, nx = shape[0] // 8 + 1, shape[1] // 8 + 1
    cy = np.arange(ny)[:, None] * 8 + 4 + rng.uniform(-1, 1, (ny, nx))
    cx = np.arange(nx)[None, :] * 8 + 4 + rng.uniform(-1, 1, (ny, nx))
    rad = rng.uniform(1.8, 3.0, (ny, nx))
    top = rng.uniform(6, 12, (ny, nx))
    iy, ix = np.clip(cy.astype(int), 0, shape[0] - 1), np.clip(cx.astype(int), 0, shape[1] - 1)
    exists = rng.random((ny, nx)) < density[iy, ix]
    tint = rng.uniform(0.75, 1.2, (ny, nx))
    gy, gx = np.arange(shape[0]) // 8, np.arange(shape[1]) // 8
    yy, xx = np.arange(shape[0])[:, None] + 0.5, np.arange(shape[1])[None, :] + 0.5
    d2 = (yy - cy[gy][:, gx]) ** 2 + (xx - cx[gy][:, gx]) ** 2
    r2 = rad[gy][:, gx] ** 2
    inside = (d2 < r2) & exists[gy][:, gx] & allowed
    h = np.where(inside, top[gy][:, gx] - 2.5 * d2 / r2, 0.0)
    return h.astype(np.float32), tint[gy][:, gx]


def make_world(shape: tuple[int, int], seed: np.random.SeedSequence | int, *, palette: str = "unique",
               shading: float = 0.5, shadows: bool = True, windows: bool = True) -> World:
    """Build a district of `shape` (rows, cols) 1 m cells; same seed -> same world.

    palette: "unique" (one random colour per building for roof and walls: learnable from
    scratch in minutes, but colour statistics alone go far), "paired" (roof and walls share
    one of 16 colours) or "shared" (roof and facade drawn independently from 10 + 10
    materials: near chance for a small CNN from scratch). shading in [0, 1]: strength of sun
    shading of roofs, trees and walls; shadows: cast shadows on the aerial colour; windows:
    darker window bands on facades.
    """
    if palette not in PALETTES:
        raise UserInputError(f"palette must be one of {', '.join(PALETTES)}, got {palette!r}.")
    if not 0.0 <= shading <= 1.0:
        raise UserInputError(f"shading must be in [0, 1], got {shading}.")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    ly, lx = road_layout(ss, shape)
    rng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, 1)))
    block, btype, lot, ey, ex, lot_h, lot_w = _lots(rng, ly, lx)
    p = _building_params(rng, int(lot.max()) + 1, palette)
    road = ly["road"][:, None] | lx["road"][None, :]
    bt = btype[block]
    edge = np.minimum(np.minimum(ly["off"], ly["len"] - ly["off"])[:, None],
                      np.minimum(lx["off"], lx["len"] - lx["off"])[None, :])
    kind = np.full(shape, GRASS, np.uint8)
    kind[(bt == 0) & (edge < 2)] = SIDEWALK
    kind[bt == 3] = PLAZA
    kind[(bt == 2) & (edge >= 3)] = WATER
    setback = p["setback"][lot]
    inner_y, inner_x = ey - setback, ex - setback
    foot = (bt == 0) & p["has"][lot] & (inner_y >= 0) & (inner_x >= 0) & ~road
    fy, fx = lot_h - 2 * setback, lot_w - 2 * setback
    roof = p["roof"][lot]
    d_in = np.where(roof == 2, np.minimum(inner_y, inner_x), np.where(fx >= fy, inner_y, inner_x))
    height = np.where(foot, p["h"][lot] + np.where(roof > 0, p["pitch"][lot] * d_in, np.float32(0)), np.float32(0))
    parapet = foot & (roof == 0) & (np.minimum(inner_y, inner_x) < 0.8)
    height = np.where(parapet, height + np.float32(0.6), height).astype(np.float32)
    kind[foot] = BUILDING
    kind[road] = ROAD
    density = np.select([kind == ROAD, bt == 1, kind == SIDEWALK, bt == 2], [0.0, 0.55, 0.18, 0.3], 0.12)
    density = density.astype(np.float32)  # trees a lattice node: parks dense, streets never
    tree_h, tint = _trees(rng, shape, (kind != BUILDING) & (kind != WATER), density)
    is_tree = tree_h > height
    height = np.maximum(height, tree_h)
    top, wall = _colours(rng, kind, is_tree, tint, p, lot, foot, parapet, ly, lx, road)
    kind[is_tree] = TREE
    sun_az, sun_el = float(rng.uniform(0, 360)), float(rng.uniform(35, 60))
    shade = _hillshade(height, sun_az, sun_el, shading)
    if shadows:
        shade = shade * np.where(_cast_shadows(height, sun_az, sun_el), np.float32(0.6), np.float32(1.0))
    top = np.clip(top * shade[..., None], 0, 255).astype(np.uint8)
    return World(height, top, np.clip(wall, 0, 255).astype(np.uint8), kind, sun_az, sun_el,
                 _building_centres(lot, foot, p), shading, windows)


def _colours(rng, kind, is_tree, tint, p, lot, foot, parapet, ly, lx, road):
    """(top, wall) (H, W, 3) float32 base colours, before sun shading."""
    base = np.zeros((len(_BASE) + 1, 3), np.float32)
    for k, rgb in _BASE.items():
        base[k] = rgb
    col = lambda m: m[..., None]  # noqa: E731
    dash_x = (np.arange(kind.shape[1]) % 6) < 3
    dash_y = (np.arange(kind.shape[0]) % 6) < 3
    marks = ((ly["road"] & (np.abs(ly["road_off"] - ly["road_w"] / 2) < 0.5))[:, None] & ~lx["road"][None, :]
             & dash_x[None, :])
    marks |= ((lx["road"] & (np.abs(lx["road_off"] - lx["road_w"] / 2) < 0.5))[None, :] & ~ly["road"][:, None]
              & dash_y[:, None])
    top = np.where(col(marks), np.array([225, 222, 205], np.float32), base[kind])
    roof = p["roof_rgb"][lot] * col(np.where(parapet, np.float32(0.8), np.float32(1.0)))
    top = np.where(col(foot), roof, top) * col(0.94 + 0.12 * rng.random(kind.shape, dtype=np.float32))  # texture
    wall = np.where(col(foot), p["wall_rgb"][lot], top)
    canopy = base[TREE] * col(tint.astype(np.float32))
    return np.where(col(is_tree), canopy, top), np.where(col(is_tree), canopy * np.float32(0.85), wall)


def sun_vector(az: float, el: float) -> np.ndarray:
    """Unit vector (y, x, z) toward the sun at azimuth/elevation in degrees (z up)."""
    a, e = np.radians(az), np.radians(el)
    return np.array([-np.cos(a) * np.cos(e), np.sin(a) * np.cos(e), np.sin(e)])


def _hillshade(height, az, el, strength):
    gy, gx = np.gradient(height.astype(np.float64))
    steep = (np.abs(gy) > 1.5) | (np.abs(gx) > 1.5)  # wall steps, not surfaces
    gy, gx = np.where(steep, 0, gy), np.where(steep, 0, gx)
    s = sun_vector(az, el)
    lam = (-gy * s[0] - gx * s[1] + s[2]) / np.sqrt(gy * gy + gx * gx + 1) / s[2]
    shade = np.clip(0.35 + 0.65 * lam, 0.3, 1.25)
    return (1 + strength * (shade - 1)).astype(np.float32)


def _cast_shadows(height, az, el):
    """Cells that a taller cell hides from the sun (marching toward the sun in 1 m steps)."""
    s = sun_vector(az, el)
    hz = np.hypot(s[0], s[1])
    dy, dx, rise = s[0] / hz, s[1] / hz, s[2] / hz
    shadow = np.zeros(height.shape, bool)
    H, W = height.shape
    for t in range(1, int(height.max() / rise) + 2):
        oy, ox = int(round(t * dy)), int(round(t * dx))
        if abs(oy) >= H or abs(ox) >= W:
            break
        src = height[max(oy, 0):H + min(oy, 0), max(ox, 0):W + min(ox, 0)]
        dst = (slice(max(-oy, 0), H + min(-oy, 0)), slice(max(-ox, 0), W + min(-ox, 0)))
        shadow[dst] |= src - t * rise > height[dst] + 0.3
    return shadow


def _building_centres(lot: np.ndarray, foot: np.ndarray, p: dict) -> np.ndarray:
    """(B, 3) rows (y, x, height) of the footprint centroid of every building of >= 100 m2."""
    n = int(lot.max()) + 1
    iy, ix = np.nonzero(foot)
    ids = lot[iy, ix]
    cnt = np.bincount(ids, minlength=n)
    sy, sx = np.bincount(ids, iy + 0.5, n), np.bincount(ids, ix + 0.5, n)
    keep = cnt >= 100
    return np.stack([sy[keep] / cnt[keep], sx[keep] / cnt[keep], p["h"][keep]], 1)


def rotate_world(world: World, k: int = 1) -> World:
    """The world turned by k quarter turns counter-clockwise (np.rot90 of every map), the sun
    turned with it. A position (y, x) moves to rotate_point(world.shape, y, x, k)."""
    rot = lambda a: np.ascontiguousarray(np.rot90(a, k))  # noqa: E731
    return replace(world, height=rot(world.height), top=rot(world.top), wall=rot(world.wall),
                   kind=rot(world.kind), sun_azimuth=(world.sun_azimuth - 90.0 * k) % 360.0,
                   buildings=np.array([[*rotate_point(world.shape, y, x, k), h] for y, x, h in world.buildings]
                                      ).reshape(-1, 3))


def rotate_point(shape: tuple[int, int], y: float, x: float, k: int = 1) -> tuple[float, float]:
    """Where (y, x) lands after np.rot90 of maps of `shape` by k quarter turns."""
    h, w = shape
    for _ in range(k % 4):
        y, x, h, w = w - x, y, w, h
    return y, x


def road_core(seed: np.random.SeedSequence | int, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: road cells at least 3.5 m from a road edge, from the road layout alone
    (cheap: no world is built). No tree canopy (radius <= 3 m, centred off-road) reaches them,
    so they equal the tree-free road cells of make_world(shape, seed) there."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    ly, lx = road_layout(ss, shape)
    core = lambda lay: lay["road"] & (lay["road_off"] >= 3.5) & (lay["road_off"] <= lay["road_w"] - 3.5)  # noqa: E731
    return core(ly)[:, None] | core(lx)[None, :]


def road_points(where: World | np.ndarray, n: int, min_dist: float, margin: float,
                rng: np.random.Generator) -> np.ndarray:
    """Up to n (y, x) cell centres on the road of a world (tree-free road cells at least 3 m
    from any other cell, i.e. the middle of the street) or on the True cells of a bool mask,
    at least `min_dist` apart and `margin` from the edges (greedy dart throwing over a random
    subset of the cells). (n', 2) float64."""
    if isinstance(where, World):
        free = (where.kind == ROAD) & (where.height <= 0.0)
        ok = free.copy()
        for s in range(1, 4):  # erode by 3 cells
            ok[s:] &= free[:-s]
            ok[:-s] &= free[s:]
            ok[:, s:] &= free[:, :-s]
            ok[:, :-s] &= free[:, s:]
    else:
        ok = np.array(where, bool)
    h, w = ok.shape
    m = int(np.ceil(margin))
    ok[:m] = ok[h - m:] = False
    ok[:, :m] = ok[:, w - m:] = False
    cells = np.argwhere(ok)
    return dart(cells[rng.permutation(len(cells))[: max(40 * n, 200)]] + 0.5, n, min_dist)


def dart(cand: np.ndarray, n: int, min_dist: float, accept=None, init: np.ndarray | None = None) -> np.ndarray:
    """Greedy thinning: go through candidates (M, 2) in order and keep one when no kept point
    (starting from `init`) lies within min_dist and accept(p) (if given) says yes; stop at n
    kept in all. Returns (n', 2) float64 including init."""
    grid: dict[tuple[int, int], list[int]] = {}
    kept: list[np.ndarray] = []
    for p in (init if init is not None else ()):
        grid.setdefault((int(p[0] // min_dist), int(p[1] // min_dist)), []).append(len(kept))
        kept.append(np.asarray(p, np.float64))
    for p in cand:
        if len(kept) >= n:
            break
        gy, gx = int(p[0] // min_dist), int(p[1] // min_dist)
        near = (j for a in (-1, 0, 1) for b in (-1, 0, 1) for j in grid.get((gy + a, gx + b), ()))
        if any(np.hypot(*(kept[j] - p)) < min_dist for j in near) or (accept is not None and not accept(p)):
            continue
        grid.setdefault((gy, gx), []).append(len(kept))
        kept.append(p)
    return np.array(kept, np.float64).reshape(-1, 2)
