"""Plans of the four dataset layouts written by `s4g synth` (the real releases' layouts are
summed up in the loaders of s4g/data/).

Each `plan_*` decides locations, file names and split files and returns a Plan: rendering
items (world key, job, relative paths, jitter seed), text files, binary files written by a
function, and the manifest body (the truth the loaders' tests compare against). Paths are
relative to the dataset root.

Split rules (N = --locations):
- cvusa: val = max(1, round(0.2 N)) locations in districts of their own (a separate area),
  train = the rest; ids 1..N shuffled over both splits.
- cvact: test = round(0.2 N) in separate districts (ANU_data_test); of the rest, val =
  round(0.25 * rest) drawn at random, train = the others (same area, disjoint locations).
- vigor: N panoramas spread over the four cities; in each city a random half is same-area
  train, the other half same-area test; pano_label_balanced.txt lists all of a city's.
- university: train = ceil(N / 2) buildings, test = the rest, plus `distractors` gallery-only
  buildings (default round(0.357 * test), the release's 250 / 701).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s4g.app.synth import world as sw
from s4g.app.synth.tasks import world_for
from s4g.errors import UserInputError
from s4g.geo import EARTH_RADIUS_M

DISTRICT = 640
MOSAIC_COLS = 8
CENTRES = {"cvusa": (39.7392, -104.9903), "cvact": (-35.2809, 149.1300), "Chicago": (41.8781, -87.6298),
           "NewYork": (40.7128, -74.0060), "SanFrancisco": (37.7749, -122.4194), "Seattle": (47.6062, -122.3321),
           "university": (30.5928, 114.3055)}
CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
CVACT_UTM0 = (692_000.0, 6_096_000.0)  # easting, northing of the mosaic's north-west corner
_ID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


@dataclass
class Plan:
    items: list = field(default_factory=list)  # (world key, job, [rel paths], jitter seed)
    texts: dict[str, str] = field(default_factory=dict)
    binaries: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def add(self, key, job, rels, seed_base: tuple) -> None:
        self.items.append((key, job, list(rels), (*seed_base, len(self.items))))


def world_key(seed: int, code: int, index: int, shape: tuple[int, int], style: dict) -> tuple:
    return (seed, (code, index), tuple(shape), tuple(sorted(style.items())))


def latlon(lat0: float, lon0: float, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local metres (y south, x east) around (lat0, lon0) -> degrees (spherical, mean radius)."""
    lat = lat0 - np.degrees(np.asarray(y, np.float64) / EARTH_RADIUS_M)
    lon = lon0 + np.degrees(np.asarray(x, np.float64) / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
    return lat, lon


def plan_sparse(counts: list[int], seed: int, code: int, style: dict, min_dist: float, margin: float,
                points: Callable | None = None) -> list[np.ndarray]:
    """Per group, (n, 3) rows (district, y, x): groups fill districts of their own in turn, so
    groups are separate areas. Locations are street points (road_core) unless
    points(world, n, rng) -> (n', 2) picks them from the built world."""
    out, d = [], 0
    shape = (DISTRICT, DISTRICT)
    for n in counts:
        rows: list[np.ndarray] = []
        have = 0
        while have < n:
            rng = np.random.default_rng([seed, code, d, 7])
            if points is None:  # streets need only the road layout; worlds get built by the workers
                pts = sw.road_points(sw.road_core(np.random.SeedSequence(seed, spawn_key=(code, d)), shape),
                                     n - have, min_dist, margin, rng)
            else:
                pts = points(world_for(world_key(seed, code, d, shape, style)), n - have, rng)
            rows.append(np.column_stack([np.full(len(pts), d), pts]))
            have += len(pts)
            d += 1
            if d > 20 * sum(counts) + 50:
                raise RuntimeError("the synthetic city has no room for the requested locations")
        out.append(np.concatenate(rows)[:n])
    return out


def mosaic(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global (Y south, X east) metres of (district, y, x) rows; districts tile 8 a row."""
    d = rows[:, 0].astype(np.int64)
    return (d // MOSAIC_COLS) * DISTRICT + rows[:, 1], (d % MOSAIC_COLS) * DISTRICT + rows[:, 2]


def _fmt(v: float) -> str:
    return f"{v:.8f}"


def plan_cvusa(n: int, seed: int, sizes: dict, style: dict, width_m: float) -> Plan:
    n_val = max(1, round(0.2 * n))
    groups = plan_sparse([n - n_val, n_val], seed, 1, style, width_m + 4, width_m / 2 + 2)
    ids = np.random.default_rng([seed, 1, 99]).permutation(n) + 1
    plan, coords, start = Plan(), {}, 0
    for split, rows in zip(("train", "val"), groups):
        lat, lon = latlon(*CENTRES["cvusa"], *mosaic(rows))
        recs = []
        for (d, y, x), la, lo, i in zip(rows, lat, lon, ids[start:start + len(rows)]):
            key = world_key(seed, 1, int(d), (DISTRICT, DISTRICT), style)
            a, g = f"bingmap/19/{i:07d}.jpg", f"streetview/panos/{i:07d}.jpg"
            plan.add(key, ("aerial", y, x, sizes["aerial"]), [a], (seed, 1))
            plan.add(key, ("pano", y, x, tuple(sizes["ground"])), [g], (seed, 1))
            coords[int(i)] = (la, lo)
            recs.append({"id": int(i), "query": g, "reference": a, "lat": la, "lon": lo})
        start += len(rows)
        recs.sort(key=lambda r: r["id"])
        plan.texts[f"splits/{split}-19zl.csv"] = "".join(
            f"{r['reference']},{r['query']},annotations/{r['id']:07d}.png\n" for r in recs)
        plan.manifest[split] = recs
    plan.texts["split_locations/all.csv"] = "".join(
        f"{_fmt(la)},{_fmt(lo)},{_fmt(la)},{_fmt(lo)},0\n" for la, lo in (coords[i] for i in range(1, n + 1)))
    return plan


def _pano_ids(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct 22-character ids from the alphabet of Google panorama ids."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for s in ("".join(r) for r in _ID_CHARS[rng.integers(0, 64, (n, 22))]):
            if s not in seen and len(ids) < n:
                seen.add(s)
                ids.append(s)
    return ids


def plan_cvact(n: int, seed: int, sizes: dict, style: dict, width_m: float, missing: int) -> Plan:
    n_test = max(1, round(0.2 * n))
    n_val = max(1, round(0.25 * (n - n_test)))
    trainval, test = plan_sparse([n - n_test, n_test], seed, 2, style, width_m + 4, width_m / 2 + 2)
    rng = np.random.default_rng([seed, 2, 99])
    ids = _pano_ids(rng, n)
    is_val = np.zeros(len(trainval), bool)
    is_val[rng.choice(len(trainval), n_val, replace=False)] = True
    # one file of `missing` train/val ids and of ceil(missing / 2) test ids is left unwritten
    gone = set(rng.choice(len(trainval), min(missing, len(trainval) - 2), replace=False).tolist())
    gone_test = set(rng.choice(len(test), min((missing + 1) // 2, len(test) - 1), replace=False).tolist())
    plan = Plan()
    plan.manifest = {"train": [], "val": [], "test": [], "omitted": []}
    parts = (("trainval", trainval, "ANU_data_small", 0), ("test", test, "ANU_data_test", len(trainval)))
    for part, rows, folder, off in parts:
        Y, X = mosaic(rows)
        utm = np.column_stack([CVACT_UTM0[0] + X, CVACT_UTM0[1] - Y])
        for j, (d, y, x) in enumerate(rows):
            pid, key = ids[off + j], world_key(seed, 2, int(d), (DISTRICT, DISTRICT), style)
            g, a = f"{folder}/streetview/{pid}_grdView.jpg", f"{folder}/satview_polish/{pid}_satView_polish.jpg"
            split = "test" if part == "test" else ("val" if is_val[j] else "train")
            drop = (j in gone_test) if part == "test" else (j in gone)
            lost = (a if j % 2 else g) if drop else None
            if lost != a:
                plan.add(key, ("aerial", y, x, sizes["aerial"]), [a], (seed, 2))
            if lost != g:
                plan.add(key, ("pano", y, x, tuple(sizes["ground"])), [g], (seed, 2))
            rec = {"id": pid, "query": g, "reference": a, "utm": utm[j].tolist()}
            rec.update(split=split, missing=lost)
            plan.manifest["omitted" if drop else split].append(rec)
    kept = plan.manifest["train"] + plan.manifest["val"] + plan.manifest["omitted"]
    listed = [r for r in kept if r["split"] != "test"]
    plan.binaries["ACT_data.mat"] = lambda path: _write_act_mat(path, listed, rng)
    return plan


def _write_act_mat(path: Path, rows: list[dict], rng: np.random.Generator) -> None:
    """ACT_data.mat: panoIds (char matrix, one id a row), utm (N, 2) [easting, northing] and
    trainSet/valSet structs. Each struct's index field comes third, after a count and a UTM
    decoy, so only reading the field by name gives the 1-based row indices."""
    try:
        import scipy.io
    except ImportError:
        raise UserInputError('writing CVACT needs scipy: pip install "s4g[cvact]"') from None
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    ids = np.array([r["id"] for r in rows])
    utm = np.array([r["utm"] for r in rows], np.float64)
    split = np.array([r["split"] for r in rows])
    tr = (np.flatnonzero(split == "train") + 1).astype(np.float64)[:, None]
    va = (np.flatnonzero(split == "val") + 1).astype(np.float64)[:, None]
    mat = {"panoIds": ids, "utm": utm,
           "trainSet": {"trainNum": float(len(tr)), "trainUtm": utm[tr[:, 0].astype(int) - 1], "trainInd": tr},
           "valSet": {"valNum": float(len(va)), "valUtm": utm[va[:, 0].astype(int) - 1], "valInd": va}}
    with open(path, "wb") as fh:
        scipy.io.savemat(fh, mat, format="5", do_compression=True)
