"""The job of `s4g neighbours`: the exact k nearest GPS neighbours of points from a CSV or of
a dataset's training classes, written to an .npz."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console

from s4g import sampling
from s4g.data import registry as datasets
from s4g.data.tables import read_coords
from s4g.errors import UserInputError
from s4g.fileio import check_output, npz_kind, save_npz
from s4g.flags import Flag
from s4g.geo import haversine_m
from s4g.retrieval.released import check_lists, released_gps_neighbours

NEIGHBOURS_FILE = npz_kind("an s4g neighbours file", "idx", "dist_m")


def write_gps_neighbours(
    *, out: Path, coords: Path | None, dataset: str | None, data_root: Path | None, split_dir: str, k: int,
    lists: str, overwrite: bool, console: Console,
) -> str:
    """Write `out` (.npz: idx (N, k) int64, dist_m (N, k) float64 metres) for the points of
    --coords or --dataset's training classes, by `lists` ("s4g" or "released"); the line that
    says what was written."""
    check_lists(lists)
    if (coords is None) == (dataset is None):
        raise UserInputError(f"give either {Flag.COORDS} FILE.csv or {Flag.DATASET} NAME {Flag.DATA_ROOT} DIR")
    if coords is not None:
        lat, lon = read_coords(coords)
        source = str(coords)
    else:
        assert dataset is not None  # checked above
        spec = datasets.get(dataset)
        if not spec.has_gps:
            raise UserInputError(f"{Flag.DATASET} {dataset} has no GPS coordinates to find neighbours by")
        root = spec.data_root(data_root)
        train = spec.load_train(root, split_dir=split_dir)
        assert train.class_lat is not None and train.class_lon is not None  # has_gps: the reader gives them
        lat, lon = train.class_lat, train.class_lon
        source = f"{dataset} classes in {root}"
    if k < 1 or k >= len(lat):
        raise UserInputError(
            f"{Flag.K} {k}: must be at least 1 and smaller than the number of points ({len(lat)}) in {source}"
        )
    check_output(out, NEIGHBOURS_FILE, option=Flag.OUT, overwrite=overwrite,
                 inputs=[(Flag.COORDS, coords), (Flag.DATA_ROOT, data_root)])
    start = time.perf_counter()
    with console.status(f"exact {k}-NN of {len(lat):,} points..."):
        if lists == "released":
            idx = released_gps_neighbours(lat, lon, k)
            dist = haversine_m(np.asarray(lat)[:, None], np.asarray(lon)[:, None], np.asarray(lat)[idx],
                               np.asarray(lon)[idx])
        else:
            idx, dist = sampling.gps_neighbours(lat, lon, k)
    seconds = time.perf_counter() - start
    save_npz(out, idx=idx, dist_m=dist)
    return (f"{len(lat):,} points from {source}, k={k}: {seconds:.2f} s; "
            f"median nearest {np.median(dist[:, 0]):.1f} m; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


__all__ = ["NEIGHBOURS_FILE", "write_gps_neighbours"]
