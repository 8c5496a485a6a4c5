"""`s4g synth`: write a synthetic dataset in the exact on-disk layout of CVUSA, CVACT, VIGOR or
University-1652, rendered from a procedural city (s4g.app.synth.world).

    manifest = write_layout("cvusa", "data/cvusa", locations=1000, seed=0, size="small")

The manifest (also saved as s4g_synth_manifest.json at the root; the real releases have no
such file) records what was written, paths relative to the root:
  layout, locations, seed, size, complete (false while writing), generator_version,
  image_sizes {aerial: [S, S], ground: [H, W]}, world {knobs}, files (every file written),
  and splits:
  - cvusa: {train, val}: [{id, query, reference, lat, lon}] sorted by id.
  - cvact: {train, val, test}: [{id, query, reference, utm: [easting, northing], split,
    missing: null}], omitted: the same records with `missing` = the file left unwritten
    (their id stays in ACT_data.mat for train/val; test ids are the folders' intersection).
  - vigor: {vigor_layout, cities: {City: {grid, spacing_m, tiles: [{file, name, lat, lon}],
    panoramas: [{file, name, lat, lon, positive, semi_positives: [3 names],
    delta_px: [[dy, dx] x 4], same_area: "train"|"test"}]}}}.
  - university: {train, test, distractors}: [{id, lat, lon, satellite: [paths],
    drone: [[paths of view 1], ...]}] (a test image is written to query_* and gallery_*).
Split rules are in s4g.app.synth.layouts (cvusa, cvact) and s4g.app.synth.dense.

Difficulty knobs: palette "unique" (default: one random colour a building, roof and walls),
"paired" (roof and walls share one of 16 colours) or "shared" (roof and walls drawn
independently from 10 + 10 materials); shading (sun shading strength, 0.5); shadows; jitter
(per-image colour gain/offset, 0.03). Colour statistics alone go far on "unique": measured
colour-histogram R@1 / R@5 on the 200-location val split of `--layout cvusa --locations 1000
--seed 0` (small): unique 19.0 / 48.0 %, unique + jitter 0.1: 6.0 / 15.0 %, paired
16.5 / 30.0 %, shared + jitter 0.1: 0.5 / 3.0 % (chance 0.5 / 2.5 %). Report
s4g.retrieval.baseline.colour_histogram_recall next to any synthetic result.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from s4g.app.synth import tasks as synth_tasks
from s4g.app.synth.dense import VIGOR_LAYOUTS, plan_university, plan_vigor
from s4g.app.synth.layouts import plan_cvact, plan_cvusa
from s4g.app.synth.world import PALETTES
from s4g.errors import UserInputError, check_seed
from s4g.fileio import atomic_path, save_json
from s4g.flags import Flag

LAYOUTS = ("cvusa", "cvact", "vigor", "university")
# Bumped whenever the same arguments would render different files (caches key on it).
GENERATOR_VERSION = 1


class ImageSizes(TypedDict):
    """Rendered image sizes in pixels: the aerial tile's side, the ground view's (H, W)."""

    aerial: int
    ground: tuple[int, int]


# (aerial side, ground (H, W)); "real" = the releases' sizes, "small" = fast default.
# Panorama widths are multiples of 4 so a quarter turn is an exact column shift.
SIZES: dict[str, dict[str, ImageSizes]] = {
    "cvusa": {"small": {"aerial": 128, "ground": (56, 308)}, "real": {"aerial": 750, "ground": (224, 1232)}},
    "cvact": {"small": {"aerial": 128, "ground": (128, 256)}, "real": {"aerial": 1200, "ground": (832, 1664)}},
    "vigor": {"small": {"aerial": 128, "ground": (128, 256)}, "real": {"aerial": 640, "ground": (1024, 2048)}},
    "university": {"small": {"aerial": 128, "ground": (128, 128)}, "real": {"aerial": 512, "ground": (512, 512)}},
}
MIN_LOCATIONS = {"cvusa": 2, "cvact": 3, "vigor": 8, "university": 2}


def _check(layout: str, locations: int, seed: int, size: str, palette: str, shading: float, jitter: float,
           vigor_layout: str, drone_views: int, cvact_missing: int, distractors: int | None,
           tile_m: float, eye_m: float, workers: int | None) -> None:
    if layout not in LAYOUTS:
        raise UserInputError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}.")
    if size not in ("small", "real"):
        raise UserInputError(f"{Flag.SIZE} must be small or real, got {size!r}.")
    if locations < MIN_LOCATIONS[layout]:
        raise UserInputError(
            f"{Flag.LOCATIONS} must be at least {MIN_LOCATIONS[layout]} for {layout}, got {locations}.")
    if palette not in PALETTES:
        raise UserInputError(f"{Flag.PALETTE} must be one of {', '.join(PALETTES)}, got {palette!r}.")
    if not 0 <= shading <= 1 or not 0 <= jitter < 1:
        raise UserInputError(
            f"{Flag.SHADING} must be in [0, 1] and {Flag.JITTER} in [0, 1), got {shading} and {jitter}.")
    if vigor_layout not in VIGOR_LAYOUTS:
        raise UserInputError(f"{Flag.VIGOR_LAYOUT} must be one of {', '.join(VIGOR_LAYOUTS)}, got {vigor_layout!r}.")
    if cvact_missing < 0 or (distractors is not None and distractors < 0):
        raise UserInputError(f"{Flag.CVACT_MISSING} and distractors must not be negative.")
    if tile_m <= 0 or tile_m != int(tile_m) or int(tile_m) % 2 or eye_m <= 0:
        raise UserInputError(
            f"tile width must be an even number of metres and eye height positive, got {tile_m} and {eye_m}.")
    if layout == "cvact" and importlib.util.find_spec("scipy") is None:
        raise UserInputError('writing the CVACT layout (ACT_data.mat) needs scipy: pip install "s4g[cvact]"')
    check_seed(Flag.SEED, seed)
    if workers is not None and workers < 1:
        raise UserInputError(f"{Flag.WORKERS} must be at least 1, got {workers}.")
    if drone_views < 1:
        raise UserInputError(f"{Flag.DRONE_VIEWS} must be at least 1, got {drone_views}.")


def write_layout(layout: str, out_dir: str | os.PathLike, *, locations: int = 1000, seed: int = 0,
                 size: str = "small", palette: str = "unique", shading: float = 0.5, shadows: bool = True,
                 windows: bool = True, jitter: float = 0.03, tile_m: float = 96.0, eye_m: float = 2.0,
                 cvact_missing: int = 2, vigor_layout: str = "original", drone_views: int = 8,
                 distractors: int | None = None, jpeg_quality: int = 90, workers: int | None = None,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write `layout` under out_dir and return the manifest dict (see module docstring).

    locations: pairs (cvusa, cvact), panoramas (vigor) or buildings (university) in all.
    size: "small" or "real" image sizes (SIZES). palette/shading/shadows/windows: world look;
    jitter: per-image colour gain/offset amplitude. tile_m: aerial tile width in metres (also
    twice the panorama's view range). cvact_missing: train/val ids with one file left out
    (plus half as many test ids). workers: processes (default: usable CPUs, at most 8);
    the output does not depend on it. progress(done, total) is called as images are written.
    """
    _check(layout, locations, seed, size, palette, shading, jitter, vigor_layout, drone_views, cvact_missing,
           distractors, tile_m, eye_m, workers)
    root = Path(out_dir)
    synth_tasks.prepare_out(root, overwrite)
    sizes = SIZES[layout][size]
    style = {"palette": palette, "shading": float(shading), "shadows": bool(shadows), "windows": bool(windows)}
    try:
        plan = _plan(layout, locations, seed, sizes, style, tile_m, cvact_missing, vigor_layout, drone_views,
                     distractors)
        files = sorted({r for _, _, rels, _ in plan.items for r in rels} | set(plan.texts) | set(plan.binaries))
        # prepare_out moved an earlier synth output's files aside: whatever is left is someone else's
        clash = next((rel for rel in files if (root / rel).exists()), None)
        if clash is not None:
            raise UserInputError(
                f"{Flag.OUT} {str(root)!r} already holds {clash}, which s4g synth did not write; it never writes "
                f"over other files (not even with {Flag.OVERWRITE}): choose a new or empty folder")
        manifest = {"layout": layout, "locations": locations, "seed": seed, "size": size, "complete": False,
                    "generator_version": GENERATOR_VERSION,
                    "image_sizes": {"aerial": [sizes["aerial"]] * 2, "ground": list(sizes["ground"])},
                    "world": {**style, "jitter": jitter, "tile_m": tile_m, "eye_m": eye_m},
                    "splits": plan.manifest, "files": files}
        # written first, so an interrupted run's folder is still known (and cleaned) as synth output
        save_json(root / synth_tasks.MANIFEST, manifest)
        for rel, fn in plan.binaries.items():
            with atomic_path(root / rel, suffix=Path(rel).suffix) as tmp:
                fn(tmp)
        for rel, text in plan.texts.items():
            with atomic_path(root / rel) as tmp:
                tmp.write_text(text)
        opts = {"width_m": tile_m, "eye_m": eye_m, "jitter": jitter, "quality": jpeg_quality}
        tasks = synth_tasks.group_jobs(plan.items)
        synth_tasks.run_tasks(root, tasks, opts, workers or synth_tasks.default_workers(), progress)
    finally:
        synth_tasks.clear_worlds()
    manifest["complete"] = True
    save_json(root / synth_tasks.MANIFEST, manifest)
    return manifest


def _plan(layout, locations, seed, sizes, style, tile_m, cvact_missing, vigor_layout, drone_views, distractors):
    if layout == "cvusa":
        return plan_cvusa(locations, seed, sizes, style, tile_m)
    if layout == "cvact":
        return plan_cvact(locations, seed, sizes, style, tile_m, cvact_missing)
    if layout == "vigor":
        return plan_vigor(locations, seed, sizes, style, tile_m, vigor_layout)
    return plan_university(locations, seed, sizes, style, tile_m, drone_views, distractors)
