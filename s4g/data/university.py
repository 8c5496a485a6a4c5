"""University-1652: drone views and satellite tiles of university buildings.

Every image lives in a folder named by its building id (the class). Training pairs each
drone image `train/drone/{bid}/*` with its building's tile `train/satellite/{bid}/{bid}.jpg`.
Drone->satellite ("d2s") searches `test/query_drone` in `test/gallery_satellite`;
satellite->drone ("s2d") searches `test/query_satellite` in `test/gallery_drone` (several
positives per query). Gallery buildings that no query has are distractors. No GPS.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from s4g.data._files import list_images, list_subdirs, require_dir, require_root
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError

EVAL_SPLITS = ("test",)
_EVAL_FOLDERS = {
    "d2s": ("query_drone", "gallery_satellite", "drone", "aerial"),
    "s2d": ("query_satellite", "gallery_drone", "aerial", "drone"),
}


def _building_id(folder: Path, name: str) -> int:
    try:
        return int(name)
    except ValueError:
        raise UserInputError(
            f"folder {str(folder / name)!r}: University-1652 class folders must be named by the "
            "integer building id (e.g. 0001)."
        ) from None


def scan_classes(folder: Path, what: str) -> tuple[list[str], np.ndarray]:
    """(image paths, building id per image (N,) int64) of `folder/{bid}/*`, sorted by bid.

    UserInputError if `folder` is missing, holds no class folder, or a class folder holds no
    image.
    """
    require_dir(folder, what)
    files: list[str] = []
    labels: list[int] = []
    subdirs = list_subdirs(folder)
    if not subdirs:
        raise UserInputError(f"{str(folder)!r} ({what}) holds no building folder {{bid}}/.")
    for name in sorted(subdirs, key=lambda n: (_building_id(folder, n), n)):
        images = list_images(folder / name)
        if not images:
            raise UserInputError(
                f"the class folder {str(folder / name)!r} holds no image (.jpg, .jpeg, .png); "
                f"every building folder of {what} needs at least one."
            )
        bid = _building_id(folder, name)
        files.extend(str(folder / name / img) for img in images)
        labels.extend([bid] * len(images))
    return files, np.asarray(labels, dtype=np.int64)


def load_train(root: str | os.PathLike, *, split_dir: str = "splits") -> TrainSet:
    """Drone images paired with their building's satellite tile; class c = c-th building.

    split_dir is accepted for a uniform signature (University-1652 has no split files).
    """
    base = require_root(root, "university")
    sat_files, sat_bids = scan_classes(base / "train" / "satellite", "training satellite tiles")
    bids, counts = np.unique(sat_bids, return_counts=True)
    if (counts != 1).any():
        bad = sat_files[int(np.flatnonzero(sat_bids == bids[counts != 1][0])[0])]
        raise UserInputError(
            f"{str(Path(bad).parent)!r} holds {counts.max()} images; every training satellite "
            "folder must hold exactly one tile."
        )
    drone_files, drone_bids = scan_classes(base / "train" / "drone", "training drone images")
    class_of = {int(b): c for c, b in enumerate(sat_bids)}
    missing = sorted(set(drone_bids.tolist()) - class_of.keys())
    if missing:
        raise UserInputError(
            f"building {missing[0]:04d} has drone images in {str(base / 'train' / 'drone')!r} but no "
            f"tile in {str(base / 'train' / 'satellite')!r} ({len(missing)} such buildings)."
        )
    pair_class = np.asarray([class_of[int(b)] for b in drone_bids], dtype=np.int64)
    return TrainSet("university", drone_files, sat_files, pair_class, None, None, query_kind="drone")


def load_eval(root: str | os.PathLike, split: str = "test", *, direction: str, split_dir: str = "splits") -> EvalSet:
    """The test split in `direction` "d2s" (drone->satellite) or "s2d" (satellite->drone)."""
    if split not in EVAL_SPLITS:
        raise UserInputError(f"unknown University-1652 split {split!r}; valid: {', '.join(EVAL_SPLITS)}.")
    query_dir, gallery_dir, query_kind, reference_kind = _EVAL_FOLDERS[direction]
    base = require_root(root, f"university-{direction}")
    test = base / "test"
    queries, q_labels = scan_classes(test / query_dir, f"University-1652 {direction} queries")
    gallery, g_labels = scan_classes(test / gallery_dir, f"University-1652 {direction} gallery")
    if not np.isin(q_labels, g_labels).all():
        bid = int(q_labels[~np.isin(q_labels, g_labels)][0])
        raise UserInputError(
            f"query building {bid} in {str(test / query_dir)!r} has no image in "
            f"{str(test / gallery_dir)!r}; every query needs a positive in the gallery."
        )
    return EvalSet(
        f"university-{direction}", queries, gallery, q_labels, g_labels,
        query_kind=query_kind, reference_kind=reference_kind,
    )
