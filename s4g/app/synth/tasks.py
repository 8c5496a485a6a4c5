"""Rendering jobs of the synthetic writers: world cache, per-image jobs, parallel runner, files.

A job is a plain tuple (picklable); a task is (world key, jobs). Worlds built while planning
stay in a module-level cache, so worker processes started by fork inherit them instead of
rebuilding; with another start method a worker rebuilds a world from its key (same result).
Images do not depend on the number of workers: each job carries its own jitter seed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from s4g.app.synth import render as sr
from s4g.app.synth import world as sw
from s4g.config import usable_cpus
from s4g.errors import UserInputError
from s4g.fileio import atomic_path
from s4g.flags import Flag

MANIFEST = "s4g_synth_manifest.json"
_WORLDS: dict[tuple, sw.World] = {}
_CACHE_SIZE = 8


def world_for(key: tuple) -> sw.World:
    """The world of key (entropy, spawn_key, shape, style items), built once per process."""
    if key not in _WORLDS:
        entropy, spawn_key, shape, style = key
        while len(_WORLDS) >= _CACHE_SIZE:  # bounded: a large layout has hundreds of districts
            del _WORLDS[next(iter(_WORLDS))]
        _WORLDS[key] = sw.make_world(shape, np.random.SeedSequence(entropy, spawn_key=spawn_key), **dict(style))
    return _WORLDS[key]


def clear_worlds() -> None:
    """Forget cached worlds (they can hold hundreds of MB after a large layout)."""
    _WORLDS.clear()


def jitter_lut(amount: float, seed: tuple) -> list[int] | None:
    """Per-view colour jitter as a PIL point table (3 x 256 entries): a per-channel gain and a
    brightness offset, both +-amount; None when amount is 0."""
    if amount <= 0:
        return None
    rng = np.random.default_rng(list(seed))
    gain = 1 + rng.uniform(-amount, amount, 3)
    shift = rng.uniform(-amount, amount) * 255
    v = np.arange(256)[None, :] * gain[:, None] + shift
    return np.clip(v, 0, 255).astype(np.uint8).ravel().tolist()


def save_image(path: Path, img: np.ndarray | Image.Image, quality: int = 90, *, durable: bool = True) -> None:
    """Write an RGB image (uint8 array or PIL image) atomically; the format follows the
    extension (jpg/jpeg/png). durable=False skips the flush to disk (bulk files made again
    by rerunning s4g synth)."""
    ext = path.suffix.lower()
    im = img if isinstance(img, Image.Image) else Image.fromarray(img)
    with atomic_path(path, suffix=ext, durable=durable) as tmp:
        if ext == ".png":
            im.save(tmp, format="PNG", compress_level=1)
        else:
            im.save(tmp, format="JPEG", quality=quality)


def render_job(world: sw.World, job: tuple, width_m: float, eye_m: float) -> np.ndarray:
    """Render one job: ("aerial", y, x, size) | ("pano", y, x, (H, W)) |
    ("drone", y, x, size, heading_deg, tilt_deg, view_width_m)."""
    kind, y, x = job[0], job[1], job[2]
    if kind == "aerial":
        return sr.render_aerial(world, y, x, job[3], width_m)
    if kind == "pano":
        return sr.render_panorama(world, y, x, job[3], eye_m=eye_m, range_m=width_m / 2)
    return sr.render_oblique(world, y, x, job[3], job[4], job[5], job[6])


def _run_task(args: tuple) -> int:
    root, key, jobs, opts = args
    world = world_for(key)
    for job, rels, seed in jobs:
        img = Image.fromarray(render_job(world, job, opts["width_m"], opts["eye_m"]))
        lut = jitter_lut(opts["jitter"], seed)
        if lut is not None:
            img = img.point(lut)  # a table lookup in C, cheaper than float maths on the array
        for rel in rels:
            save_image(Path(root) / rel, img, opts["quality"], durable=False)
    return len(jobs)


def run_tasks(root: Path, tasks: list[tuple[tuple, list]], opts: dict, workers: int,
              progress: Callable[[int, int], None] | None) -> None:
    """Render and write every job of every task; progress(done, total) after each task."""
    total = sum(len(j) for _, j in tasks)
    done = 0
    args = [(str(root), key, jobs, opts) for key, jobs in tasks]
    if progress:
        progress(0, total)
    if workers > 1 and len(args) > 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for n in pool.imap_unordered(_run_task, args):
                done += n
                if progress:
                    progress(done, total)
        return
    for a in args:
        done += _run_task(a)
        if progress:
            progress(done, total)


def default_workers() -> int:
    """Worker processes: the CPUs this process may use, at most 8."""
    return max(1, min(8, usable_cpus()))


def read_manifest(root: Path) -> dict | None:
    """The manifest of an earlier s4g synth output in `root` (None when there is none);
    UserInputError naming it when it cannot be read."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        return None
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot read the earlier synth manifest {str(manifest)!r}: {err}") from None
    if not isinstance(found, dict) or not isinstance(found.get("files"), list):
        raise UserInputError(f"{str(manifest)!r} is not a manifest of s4g synth (no list of files)")
    return found


def prepare_out(root: Path, overwrite: bool) -> None:
    """Make `root` ready: empty/new; or, with overwrite, an earlier synth output, whose files
    are moved into a sibling folder <root>.replaced-<time>/ (never deleted), or a folder s4g
    synth did not write (nothing in it is touched)."""
    if root.exists() and not root.is_dir():
        raise UserInputError(f"{Flag.OUT} {str(root)!r} is a file; expected a folder (new or empty).")
    if not root.exists() or not any(root.iterdir()):
        root.mkdir(parents=True, exist_ok=True)
        return
    earlier = read_manifest(root)
    if earlier is not None and not overwrite:
        raise UserInputError(
            f"{Flag.OUT} {str(root)!r} already holds a synthetic {earlier.get('layout', '')} world written by s4g "
            f"synth; choose another folder, or pass {Flag.OVERWRITE} to replace it (its files are moved into "
            f"{root.name}.replaced-<time>/ beside it, not deleted)")
    if earlier is not None:
        _move_aside(root, [*earlier["files"], MANIFEST])
        return
    if not overwrite:
        raise UserInputError(
            f"{Flag.OUT} {str(root)!r} is not empty and has no {MANIFEST}, so s4g synth did not write it; "
            "refusing to mix synthetic files into it. Choose a new or empty folder, or pass "
            f"{Flag.OVERWRITE} to write into it anyway (nothing there is deleted or replaced).")


def _move_aside(root: Path, files: list[str]) -> None:
    """Move the listed files (relative to `root`, those that lie inside it) into a new sibling
    folder <root>.replaced-<time>/, keeping their relative paths; folders the move empties go."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = root.with_name(f"{root.name}.replaced-{stamp}"), 1
    while dest.exists():
        n += 1
        dest = root.with_name(f"{root.name}.replaced-{stamp}-{n}")
    base = root.resolve()
    for rel in files:
        source = (root / rel).resolve()
        if base in source.parents and source.is_file():
            target = dest / source.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            for folder in source.parents:
                if folder == base or any(folder.iterdir()):
                    break
                folder.rmdir()
    print(f"{Flag.OVERWRITE}: moved the earlier synthetic world's files to {dest}", file=sys.stderr)


def group_jobs(items: Iterable[tuple[tuple, tuple, list[str], tuple]], chunk: int = 64) -> list[tuple[tuple, list]]:
    """(world key, job, relative paths, jitter seed) items -> tasks of at most `chunk` jobs of
    one world each, in first-seen world order."""
    by_key: dict[tuple, list] = {}
    for key, job, rels, seed in items:
        by_key.setdefault(key, []).append((job, rels, seed))
    return [(k, v[i:i + chunk]) for k, v in by_key.items() for i in range(0, len(v), chunk)]
