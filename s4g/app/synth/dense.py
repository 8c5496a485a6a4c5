"""Plans of the VIGOR and University-1652 layouts written by `s4g synth`.

VIGOR (dense): each city is one world with aerial tiles on a grid whose spacing is half the
tile width, so a panorama inside the grid lies in exactly four tiles. Its positive is the
tile with the nearest centre, the other three are its semi-positives; dy dx follow the
release (Jeff-Zilence/VIGOR evaluate_from_npy.py: the panorama is drawn at column 320 - dx,
row 320 + dy): the tile centre minus the panorama position along latitude and longitude, in
the written tile's pixels, i.e. the panorama sits at row S/2 + dy, column S/2 - dx.
At most two panoramas share a positive tile, and about a fifth of
the positive tiles are shared on purpose.

University-1652: one building a class; its satellite tile is centred on the building and its
drone views are oblique renders around it on three passes (DRONE_PASSES: tilt 35, 50, 65
degrees, view 1.25, 1, 0.8 tile widths) at evenly spread, jittered headings; view v uses
pass v % 3.
"""

from __future__ import annotations

import math

import numpy as np

from s4g.app.synth import world as sw
from s4g.app.synth.layouts import (
    CENTRES,
    CITIES,
    DISTRICT,
    Plan,
    _fmt,
    _pano_ids,
    latlon,
    mosaic,
    plan_sparse,
    world_key,
)

VIGOR_LAYOUTS = ("original", "reference")
# (tilt below the horizon in degrees, view width / tile width) of the drone's three passes:
# far and flat, middle, close and steep, like University-1652's descending orbit.
DRONE_PASSES = ((35.0, 1.25), (50.0, 1.0), (65.0, 0.8))


def _city_points(core: np.ndarray, n: int, first: float, last: float, spacing: float, m: int,
                 rng: np.random.Generator) -> np.ndarray:
    """n road points strictly inside the tile grid, at most two a positive tile, some two."""
    cand = np.argwhere(core) + 0.5
    inside = np.all((cand > first + 0.5) & (cand < last - 0.5), axis=1)
    cand = cand[inside][rng.permutation(int(inside.sum()))]
    counts = np.zeros((m, m), np.int64)

    def capped(cap_from: int, cap_to: int):
        def accept(p):
            t = tuple(np.clip(np.round((p - first) / spacing).astype(int), 0, m - 1))
            if not cap_from <= counts[t] < cap_to:
                return False
            counts[t] += 1
            return True
        return accept

    n_pair = max(1, n // 5) if n >= 2 else 0
    pts = sw.dart(cand, n - n_pair, 6.0, capped(0, 1))
    pts = sw.dart(cand, n, 6.0, capped(1, 2), init=pts)
    return sw.dart(cand, n, 6.0, capped(0, 2), init=pts)


def _tiles_of(p: np.ndarray, first: float, spacing: float, half: float, m: int):
    """(positive, semi-positives) tile grid indices containing p, nearest centre first."""
    base = np.floor((p - first) / spacing).astype(int)
    cells = [(base[0] + a, base[1] + b) for a in (0, 1) for b in (0, 1)]
    cells = [c for c in cells if 0 <= c[0] < m and 0 <= c[1] < m
             and abs(p[0] - first - c[0] * spacing) < half and abs(p[1] - first - c[1] * spacing) < half]
    cells.sort(key=lambda c: math.hypot(p[0] - first - c[0] * spacing, p[1] - first - c[1] * spacing))
    return cells


def _plan_city(plan: Plan, ci: int, city: str, n: int, seed: int, sizes: dict, style: dict,
               width_m: float, folders: tuple[str, str]) -> dict:
    spacing, half = width_m / 2, width_m / 2
    first = float(int(half) + 8)
    for m in range(max(2, math.ceil(math.sqrt(n / 1.1)) + 1), 10_000):  # ~0.9 tiles a panorama, as the release
        side = int(2 * first + (m - 1) * spacing) + 1
        key = world_key(seed, 3, ci, (side, side), style)
        core = sw.road_core(np.random.SeedSequence(seed, spawn_key=(3, ci)), (side, side))
        pts = _city_points(core, n, first, first + (m - 1) * spacing, spacing, m,
                           np.random.default_rng([seed, 3, ci, 7]))
        if len(pts) == n:
            break
    rng = np.random.default_rng([seed, 3, ci, 99])
    sat_dir, pano_dir = folders
    centre = np.arange(m) * spacing + first
    cy, cx = np.meshgrid(centre, centre, indexing="ij")
    tlat, tlon = latlon(*CENTRES[city], cy - side / 2, cx - side / 2)
    names = np.array([f"satellite_{_fmt(a)}_{_fmt(b)}.png" for a, b in zip(tlat.ravel(), tlon.ravel())]).reshape(m, m)
    tiles: list[dict[str, str | float]] = []
    for i in range(m):
        for j in range(m):
            rel = f"{sat_dir}/{names[i, j]}"
            plan.add(key, ("aerial", float(cy[i, j]), float(cx[i, j]), sizes["aerial"]), [rel], (seed, 3))
            tiles.append({"file": rel, "name": str(names[i, j]), "lat": float(tlat[i, j]), "lon": float(tlon[i, j])})
    plat, plon = latlon(*CENTRES[city], pts[:, 0] - side / 2, pts[:, 1] - side / 2)
    px = sizes["aerial"] / width_m
    panos, lines = [], []
    for p, la, lo, pid in zip(pts, plat, plon, _pano_ids(rng, n)):
        name = f"{pid},{_fmt(la)},{_fmt(lo)},.jpg"
        rel = f"{pano_dir}/{name}"
        plan.add(key, ("pano", float(p[0]), float(p[1]), tuple(sizes["ground"])), [rel], (seed, 3))
        cells = _tiles_of(p, first, spacing, half, m)
        offs = [((p[0] - first - a * spacing) * px, (first + b * spacing - p[1]) * px) for a, b in cells]
        lines.append(name + "".join(f" {names[c]} {dy:.4f} {dx:.4f}" for c, (dy, dx) in zip(cells, offs)) + "\n")
        panos.append({"file": rel, "name": name, "lat": float(la), "lon": float(lo), "positive": str(names[cells[0]]),
                      "semi_positives": [str(names[c]) for c in cells[1:]], "delta_px": offs})
    order = rng.permutation(n)
    train = set(order[: n // 2].tolist())
    for k, rec in enumerate(panos):
        rec["same_area"] = "train" if k in train else "test"
    base = f"splits/{city}"
    plan.texts[f"{base}/satellite_list.txt"] = "".join(f"{t['name']}\n" for t in tiles)
    plan.texts[f"{base}/pano_label_balanced.txt"] = "".join(lines)
    plan.texts[f"{base}/same_area_balanced_train.txt"] = "".join(lines[k] for k in order[: n // 2])
    plan.texts[f"{base}/same_area_balanced_test.txt"] = "".join(lines[k] for k in order[n // 2:])
    return {"tiles": tiles, "panoramas": panos, "grid": m, "spacing_m": spacing}


def plan_vigor(n: int, seed: int, sizes: dict, style: dict, width_m: float, layout: str = "original") -> Plan:
    """n panoramas over the four cities (the first n % 4 cities get one more)."""
    if width_m != int(width_m) or int(width_m) % 2:
        raise ValueError("VIGOR tile width must be an even number of metres")
    plan = Plan()
    plan.manifest = {"vigor_layout": layout, "cities": {}}
    for ci, city in enumerate(CITIES):
        folders = (f"{city}/satellite", f"{city}/panorama") if layout == "original" else \
            (f"satellite/{city}", f"ground/{city}")
        n_c = n // 4 + (1 if ci < n % 4 else 0)
        plan.manifest["cities"][city] = _plan_city(plan, ci, city, n_c, seed, sizes, style, width_m, folders)
    return plan


def _building_points(width_m: float):
    def points(world: sw.World, n: int, rng: np.random.Generator) -> np.ndarray:
        c = world.buildings[:, :2]
        c = c[np.all((c > width_m) & (c < DISTRICT - width_m), axis=1)]
        return sw.dart(c[rng.permutation(len(c))], n, width_m + 4)
    return points


def _university_paths(kind: str, bid: str, views: int) -> tuple[list[str], list[list[str]]]:
    """(satellite paths, per view drone paths) of a building; a test building's images go to
    both the query and the gallery folders, a distractor's only to the galleries."""
    names = [f"image-{v + 1:02d}.jpeg" for v in range(views)]
    if kind == "train":
        return [f"train/satellite/{bid}/{bid}.jpg"], [[f"train/drone/{bid}/{n}"] for n in names]
    query = kind == "test"
    sat = [f"test/gallery_satellite/{bid}/{bid}.jpg"] + ([f"test/query_satellite/{bid}/{bid}.jpg"] if query else [])
    drone = [([f"test/query_drone/{bid}/{n}"] if query else []) + [f"test/gallery_drone/{bid}/{n}"] for n in names]
    return sat, drone


def plan_university(n: int, seed: int, sizes: dict, style: dict, width_m: float, views: int,
                    distractors: int | None) -> Plan:
    n_train = (n + 1) // 2
    n_test = n - n_train
    n_dis = round(0.357 * n_test) if distractors is None else distractors
    train, rest = plan_sparse([n_train, n_test + n_dis], seed, 4, style, width_m + 4, width_m,
                              points=_building_points(width_m))
    rng = np.random.default_rng([seed, 4, 99])
    total = n + n_dis
    ids = rng.choice(max(2 * total, 100), total, replace=False)
    digits = max(4, len(str(int(ids.max()))))
    plan = Plan()
    plan.manifest = {"train": [], "test": [], "distractors": []}
    for group, rows, id_block in (("train", train, ids[:n_train]), ("test", rest, ids[n_train:])):
        lat, lon = latlon(*CENTRES["university"], *mosaic(rows))
        for k, ((d, y, x), la, lo, i) in enumerate(zip(rows, lat, lon, id_block)):
            bid = f"{int(i):0{digits}d}"
            key = world_key(seed, 4, int(d), (DISTRICT, DISTRICT), style)
            kind = "train" if group == "train" else ("test" if k < n_test else "distractors")
            sat, drone = _university_paths(kind, bid, views)
            plan.add(key, ("aerial", y, x, sizes["aerial"]), sat, (seed, 4))
            headings = (np.arange(views) * 360.0 / views + rng.uniform(-10, 10, views)) % 360.0
            for v, rels in enumerate(drone):
                tilt, zoom = DRONE_PASSES[v % 3]
                job = ("drone", y, x, sizes["ground"][0], float(headings[v]), tilt, zoom * width_m)
                plan.add(key, job, rels, (seed, 4))
            rec = {"id": bid, "lat": float(la), "lon": float(lo), "satellite": sat, "drone": drone}
            plan.manifest[kind].append(rec)
    return plan
