"""CVUSA (subset of Zhai et al.): one aerial tile per north-aligned panorama.

Layout (relative to the root): `splits/train-19zl.csv`, `splits/val-19zl.csv` (no header;
`bingmap/19/ID.jpg,streetview/panos/ID.jpg,annotations/ID.png`, with `/` or `\\` between folders) and
`split_locations/all.csv` (row ID-1 = sat_lat, sat_lon, ground_lat, ground_lon, ...; some
copies of the release keep all.csv at the root instead, which is accepted too).
The "test" split is val-19zl.csv, as in every CVUSA paper.

Positions: a class's GPS (for the neighbour lists) is its panorama's ground position
(columns 3-4), as the Sample4Geo reference computes its lists; an evaluation reference's
position is its tile's centre (columns 1-2) and a query's its ground position.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from s4g.data._files import check_listed, listed_path, require_file, require_root
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError

SPLIT_FILES = {"train": "train-19zl.csv", "test": "val-19zl.csv"}
EVAL_SPLITS = ("test",)
# Top folders that mark a row's file as the wrong kind for its column (columns swapped, or
# shifted onto the segmentation annotations).
NOT_AERIAL = ("streetview", "annotations")
NOT_GROUND = ("bingmap", "annotations")


def _top_folder(rel: str) -> str:
    return rel.replace("\\", "/").lstrip("/").split("/", 1)[0]


def _check_columns(path: Path, lineno: int, aerial: str, ground: str) -> None:
    """UserInputError naming the line when a column names the other column's kind of file."""
    if _top_folder(aerial) in NOT_AERIAL or _top_folder(ground) in NOT_GROUND:
        raise UserInputError(
            f"{str(path)!r} line {lineno}: the first column must name the aerial tile (bingmap/...) and the "
            f"second the panorama (streetview/...), but they name {aerial!r} and {ground!r}; are the "
            "columns swapped?"
        )


def _read_split(root: Path, split_dir: str, split: str) -> tuple[list[str], list[str], np.ndarray]:
    """(ground paths, aerial paths, sample ids (P,) int64) of one split file, checked on disk."""
    path = require_file(root / split_dir / SPLIT_FILES[split], f"the CVUSA {split} split")
    ground, aerial, ids = [], [], []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            rows = list(enumerate(csv.reader(fh), start=1))
        except UnicodeDecodeError as err:
            raise UserInputError(f"{str(path)!r}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    for lineno, row in rows:
        if not row:
            continue
        if len(row) < 2:
            raise UserInputError(
                f"{str(path)!r} line {lineno}: expected 'bingmap/..,streetview/..,annotations/..'"
                f", got {','.join(row)!r}."
            )
        rel_aerial, rel_ground = listed_path(row[0], path, lineno), listed_path(row[1], path, lineno)
        _check_columns(path, lineno, rel_aerial, rel_ground)
        stem = os.path.splitext(os.path.basename(rel_aerial))[0]
        try:
            ids.append(int(stem))
        except ValueError:
            raise UserInputError(
                f"{str(path)!r} line {lineno}: the aerial file name {row[0]!r} should be the "
                "integer sample id (e.g. bingmap/19/0000019.jpg)."
            ) from None
        aerial.append(str(root / rel_aerial))
        ground.append(str(root / rel_ground))
    if not ids:
        raise UserInputError(f"the CVUSA split file {str(path)!r} lists no samples.")
    check_listed(ground + aerial, path)
    return ground, aerial, np.asarray(ids, dtype=np.int64)


LOCATION_TABLES = ("split_locations/all.csv", "all.csv")


def _locations(root: Path, ids: np.ndarray, required: bool) -> np.ndarray | None:
    """(len(ids), 4) float64 degrees sat_lat, sat_lon, ground_lat, ground_lon of `ids` from
    all.csv (row id-1), or None when no table exists and none is required."""
    path = next((root / rel for rel in LOCATION_TABLES if (root / rel).is_file()), None)
    if path is None:
        if required:
            raise UserInputError(
                f"expected the CVUSA GPS table (sat_lat, sat_lon, ground_lat, ground_lon per id) at "
                f"{str(root / LOCATION_TABLES[0])!r} or {str(root / LOCATION_TABLES[1])!r}, but neither exists."
            )
        return None
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            try:
                values = [float(v) for v in row[:4]]
                if len(values) < 4:
                    raise ValueError
            except ValueError:
                raise UserInputError(
                    f"{str(path)!r} line {lineno}: expected 'sat_lat,sat_lon,ground_lat,ground_lon,...'"
                    " with numbers, no header."
                ) from None
            rows.append(values)
    if ids.min() < 1 or ids.max() > len(rows):
        raise UserInputError(
            f"{str(path)!r} has {len(rows)} rows but the split lists sample id "
            f"{int(ids.max() if ids.max() > len(rows) else ids.min())}; row id-1 must exist for every id."
        )
    return np.asarray(rows, dtype=np.float64)[ids - 1]


def _dedupe(aerial: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct aerial files in order of first appearance and each row's index into them."""
    index: dict[str, int] = {}
    rows = np.fromiter((index.setdefault(a, len(index)) for a in aerial), dtype=np.int64, count=len(aerial))
    return list(index), rows


def load_train(root: str | os.PathLike, *, split_dir: str = "splits") -> TrainSet:
    """Training pairs from train-19zl.csv; class c = c-th distinct aerial tile, GPS required
    (the ground position of the class's first panorama)."""
    base = require_root(root, "cvusa")
    ground, aerial, ids = _read_split(base, split_dir, "train")
    refs, pair_class = _dedupe(aerial)
    first = np.unique(pair_class, return_index=True)[1]
    where = _locations(base, ids[first], required=True)
    assert where is not None  # required=True raises instead of returning None
    return TrainSet("cvusa", ground, refs, pair_class, where[:, 2], where[:, 3], query_kind="panorama")


def load_eval(root: str | os.PathLike, split: str = "test", *, split_dir: str = "splits") -> EvalSet:
    """The test split (val-19zl.csv): panoramas against their tiles, one-to-one."""
    if split not in EVAL_SPLITS:
        raise UserInputError(f"unknown CVUSA split {split!r}; valid: {', '.join(EVAL_SPLITS)}.")
    base = require_root(root, "cvusa")
    ground, aerial, ids = _read_split(base, split_dir, split)
    refs, labels = _dedupe(aerial)
    first = np.unique(labels, return_index=True)[1]
    where = _locations(base, ids, required=False)
    tiles = None if where is None else where[first]
    return EvalSet(
        "cvusa", ground, refs, labels, np.arange(len(refs), dtype=np.int64),
        reference_lat=None if tiles is None else tiles[:, 0], reference_lon=None if tiles is None else tiles[:, 1],
        query_lat=None if where is None else where[:, 2], query_lon=None if where is None else where[:, 3],
    )
