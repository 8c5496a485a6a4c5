"""The user's own data: a `pairs.csv` table of (ground image, aerial tile, lat, lon).

`DIR/pairs.csv` (or a .csv path given directly) has a header naming at least the columns
query, reference, lat, lon, and optionally split (train/test; rows without it are train).
Paths are relative to the table's folder (absolute paths are kept); either `/` or `\\`
separates folders. A class is a distinct
reference file, in order of first appearance; its lat/lon are those of its first row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from s4g.data._files import check_listed, listed_path, require_file
from s4g.data.records import EvalSet, TrainSet
from s4g.data.tables import parse_latlon, read_rows
from s4g.errors import UserInputError

REQUIRED = ("query", "reference", "lat", "lon")
SPLITS = ("train", "test")
EVAL_SPLITS = ("test", "train")


def table_path(root: str | os.PathLike) -> Path:
    """The pairs table: `root` itself if it is a file, else `root/pairs.csv`."""
    path = Path(root).expanduser()
    if path.is_file():
        return path.resolve()
    if not path.is_dir():
        raise UserInputError(
            f"data root {str(path)!r} for dataset 'csv' does not exist; pass a folder holding "
            "pairs.csv (columns query,reference,lat,lon[,split]) or the .csv file itself."
        )
    return require_file(path.resolve() / "pairs.csv", "header query,reference,lat,lon[,split]")


def read_pairs(root: str | os.PathLike, split: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(query paths, reference paths, lat (P,), lon (P,)) of the rows of `split`, checked on disk."""
    path = table_path(root)
    base = path.parent
    queries, refs, lat, lon = [], [], [], []
    rows = read_rows(path, {c: (c,) for c in REQUIRED}, optional={"split": ("split",)})
    for lineno, row in rows:
        row_split = row["split"] or "train"
        if row_split not in SPLITS:
            raise UserInputError(f"{str(path)!r} line {lineno}: split {row_split!r} must be 'train' or 'test'.")
        if row_split != split:
            continue
        if not row["query"] or not row["reference"]:
            raise UserInputError(f"{str(path)!r} line {lineno}: query and reference must not be empty.")
        la, lo = parse_latlon(path, lineno, row["lat"], row["lon"])
        queries.append(str(base / listed_path(row["query"], path, lineno)))
        refs.append(str(base / listed_path(row["reference"], path, lineno)))
        lat.append(la)
        lon.append(lo)
    if not queries:
        raise UserInputError(f"{str(path)!r} has no row of split {split!r}.")
    check_listed(queries + refs, path)
    return queries, refs, np.asarray(lat), np.asarray(lon)


def _classes(refs: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Distinct references in order of first appearance, row -> class, first row of each class."""
    index: dict[str, int] = {}
    rows = np.fromiter((index.setdefault(r, len(index)) for r in refs), dtype=np.int64, count=len(refs))
    first = np.unique(rows, return_index=True)[1]
    return list(index), rows, first


def load_train(root: str | os.PathLike, *, split_dir: str = "splits") -> TrainSet:
    """Training rows (split 'train' or no split column); GPS per class from its first row."""
    queries, refs, lat, lon = read_pairs(root, "train")
    classes, pair_class, first = _classes(refs)
    return TrainSet("csv", queries, classes, pair_class, lat[first], lon[first])


def load_eval(root: str | os.PathLike, split: str = "test", *, split_dir: str = "splits") -> EvalSet:
    """Rows of `split` as queries against the distinct references of those rows."""
    if split not in EVAL_SPLITS:
        raise UserInputError(f"unknown csv split {split!r}; valid: {', '.join(EVAL_SPLITS)}.")
    queries, refs, lat, lon = read_pairs(root, split)
    classes, labels, first = _classes(refs)
    return EvalSet(
        "csv", queries, classes, labels, np.arange(len(classes), dtype=np.int64),
        reference_lat=lat[first], reference_lon=lon[first], query_lat=lat, query_lon=lon,
    )
