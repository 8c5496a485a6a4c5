"""CVACT: north-aligned panoramas of Canberra and their aerial tiles, one-to-one.

`ACT_data.mat` (read with scipy, the optional extra `s4g[cvact]`) holds `panoIds`, `utm`
(N x 2 metres, zone 55 south) and the structs `trainSet.trainInd` / `valSet.valInd` (1-based
rows of panoIds), always read by field name. Train and val images live in
`ANU_data_small/{streetview,satview_polish}`; ids whose two files are not both present are
skipped and counted (a MissingPairsWarning says how many; `scan_split` returns them). The
test split is the sorted intersection of the ids found in `ANU_data_test/streetview` and
`ANU_data_test/satview_polish`; it needs no .mat file and has no GPS.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s4g.data._files import list_names, require_dir, require_file, require_root
from s4g.data.records import EvalSet, TrainSet
from s4g.data.utm import utm_to_latlon
from s4g.errors import UserInputError

EVAL_SPLITS = ("val", "test")
GROUND_SUFFIX = "_grdView.jpg"
AERIAL_SUFFIX = "_satView_polish.jpg"
UTM_ZONE, UTM_SOUTH = 55, True
_SPLIT_FIELDS = {"train": ("trainSet", "trainInd"), "val": ("valSet", "valInd")}


class MissingPairsWarning(UserWarning):
    """Some ids of a CVACT split lack one or both image files and were skipped."""

    def __init__(self, message: str, count: int):
        super().__init__(message)
        self.count = count


@dataclass(frozen=True)
class CvactSplit:
    """One CVACT split after checking the disk.

    ids: kept ids (str) whose two image files exist; skipped_ids: listed ids that lack one;
    lat, lon: (len(ids),) float64 degrees, or None for the test split; folder: image folder.
    """

    ids: list[str]
    skipped_ids: list[str]
    lat: np.ndarray | None
    lon: np.ndarray | None
    folder: Path


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserInputError(
            f"reading the CVACT table {str(path)!r} needs scipy; install it with "
            'pip install "s4g[cvact]".'
        ) from None
    try:
        return loadmat(str(path))
    except Exception as err:  # noqa: BLE001 - scipy raises several types for a bad file
        raise UserInputError(
            f"cannot read {str(path)!r} as a MATLAB v5 file ({err}); expected CVACT's ACT_data.mat."
        ) from None


def _as_str(value) -> str:
    """An id from loadmat: plain str, or a (nested) 1-element array holding one."""
    while isinstance(value, np.ndarray):
        value = value.flat[0]
    return str(value).strip()


def _struct_field(mat: dict, path: Path, struct: str, field: str) -> np.ndarray:
    """mat[struct].field as a flat int64 array, read by name; UserInputError if absent."""
    arr = mat.get(struct)
    names = getattr(getattr(arr, "dtype", None), "names", None) or ()
    if arr is None or field not in names:
        found = ", ".join(sorted(k for k in mat if not k.startswith("__")))
        raise UserInputError(
            f"{str(path)!r} has no field {struct}.{field}; expected CVACT's ACT_data.mat with "
            f"panoIds, utm, trainSet.trainInd and valSet.valInd (found: {found})."
        )
    value = arr[field].flat[0]
    return np.asarray(value).astype(np.int64).ravel()


def _read_table(root: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, lat, lon) of the rows of `split` (train or val) in ACT_data.mat, in listed order."""
    path = require_file(root / "ACT_data.mat", "CVACT split and UTM table")
    mat = _loadmat(path)
    for key in ("panoIds", "utm"):
        if key not in mat:
            raise UserInputError(
                f"{str(path)!r} has no variable {key!r}; expected CVACT's ACT_data.mat with "
                "panoIds, utm, trainSet.trainInd and valSet.valInd."
            )
    pano_ids = [_as_str(v) for v in np.asarray(mat["panoIds"], dtype=object).ravel()]
    utm = np.asarray(mat["utm"], dtype=np.float64).reshape(-1, 2)
    rows = _struct_field(mat, path, *_SPLIT_FIELDS[split]) - 1
    if len(utm) != len(pano_ids) or rows.size == 0 or rows.min() < 0 or rows.max() >= len(pano_ids):
        raise UserInputError(
            f"{str(path)!r} is inconsistent: {len(pano_ids)} panoIds, {len(utm)} utm rows and "
            f"{split} indices in [{rows.min() + 1 if rows.size else '-'}, "
            f"{rows.max() + 1 if rows.size else '-'}]; indices must be 1-based rows of panoIds."
        )
    easting, northing = utm[rows, 0], utm[rows, 1]
    # Column order differs between copies of the file; in a southern UTM zone the northing
    # (> 1,000 km) always exceeds the easting (< 834 km), so the larger column is northing.
    if np.median(easting) > np.median(northing):
        easting, northing = northing, easting
    lat, lon = utm_to_latlon(easting, northing, UTM_ZONE, UTM_SOUTH)
    return [pano_ids[r] for r in rows], lat, lon


def scan_split(root: str | os.PathLike, split: str) -> CvactSplit:
    """The ids of `split` ("train", "val" or "test") whose two image files exist."""
    base = require_root(root, "cvact")
    if split == "test":
        folder = base / "ANU_data_test"
        grd = require_dir(folder / "streetview", "CVACT test panoramas *_grdView.jpg")
        sat = require_dir(folder / "satview_polish", "CVACT test tiles *_satView_polish.jpg")
        g = {n[: -len(GROUND_SUFFIX)] for n in list_names(grd) if n.endswith(GROUND_SUFFIX)}
        a = {n[: -len(AERIAL_SUFFIX)] for n in list_names(sat) if n.endswith(AERIAL_SUFFIX)}
        ids = sorted(g & a)
        if not ids:
            raise UserInputError(
                f"no CVACT test pair in {str(folder)!r}: expected ID_grdView.jpg in streetview/ "
                "and ID_satView_polish.jpg in satview_polish/ for the same IDs."
            )
        return CvactSplit(ids, sorted(g ^ a), None, None, folder)
    listed, lat, lon = _read_table(base, split)
    folder = base / "ANU_data_small"
    grd_names = set(list_names(require_dir(folder / "streetview", "CVACT panoramas *_grdView.jpg")))
    sat_names = set(list_names(require_dir(folder / "satview_polish", "CVACT tiles *_satView_polish.jpg")))
    keep = np.array([i + GROUND_SUFFIX in grd_names and i + AERIAL_SUFFIX in sat_names for i in listed], dtype=bool)
    ids = [i for i, k in zip(listed, keep) if k]
    skipped = [i for i, k in zip(listed, keep) if not k]
    if not ids:
        raise UserInputError(
            f"none of the {len(listed)} CVACT {split} ids has both {folder}/streetview/ID{GROUND_SUFFIX} "
            f"and {folder}/satview_polish/ID{AERIAL_SUFFIX}; check the data root."
        )
    if skipped:
        warnings.warn(
            MissingPairsWarning(
                f"CVACT {split}: skipped {len(skipped)} of {len(listed)} ids whose panorama or "
                f"tile is missing under {str(folder)!r} (e.g. {skipped[0]!r}).",
                len(skipped),
            ),
            stacklevel=2,
        )
    return CvactSplit(ids, skipped, lat[keep], lon[keep], folder)


def _files(split: CvactSplit) -> tuple[list[str], list[str]]:
    grd, sat = split.folder / "streetview", split.folder / "satview_polish"
    return (
        [str(grd / (i + GROUND_SUFFIX)) for i in split.ids],
        [str(sat / (i + AERIAL_SUFFIX)) for i in split.ids],
    )


def load_train(root: str | os.PathLike, *, split_dir: str = "splits") -> TrainSet:
    """Training pairs of trainSet.trainInd; class c = pair c (one-to-one), GPS from utm.

    split_dir is accepted for a uniform signature; CVACT keeps its splits in ACT_data.mat.
    """
    split = scan_split(root, "train")
    ground, aerial = _files(split)
    return TrainSet(
        "cvact", ground, aerial, np.arange(len(ground), dtype=np.int64), split.lat, split.lon
    )


def load_eval(root: str | os.PathLike, split: str = "val", *, split_dir: str = "splits") -> EvalSet:
    """The "val" (valSet.valInd) or "test" (ANU_data_test) split, one-to-one."""
    if split not in EVAL_SPLITS:
        raise UserInputError(f"unknown CVACT split {split!r}; valid: {', '.join(EVAL_SPLITS)}.")
    found = scan_split(root, split)
    ground, aerial = _files(found)
    labels = np.arange(len(ground), dtype=np.int64)
    return EvalSet(
        "cvact", ground, aerial, labels, labels.copy(),
        reference_lat=found.lat, reference_lon=found.lon, query_lat=found.lat, query_lon=found.lon,
    )
