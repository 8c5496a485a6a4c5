"""The job of `s4g index`: embed geo-tagged aerial tiles (a folder + CSV, or a dataset's
references) into an index that `s4g locate` searches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from rich.console import Console

from s4g.data import registry as datasets
from s4g.data.tables import read_tiles
from s4g.errors import UserInputError
from s4g.fileio import check_output
from s4g.flags import Flag
from s4g.retrieval.index import INDEX_EMBEDDINGS, INDEX_FILE, build_index, index_paths
from s4g.runtime import pick_device


def index_tiles(
    *, checkpoint: Path, out: Path, images: Path | None, coords: Path | None, dataset: str | None,
    data_root: Path | None, split: str | None, split_dir: str, float16: bool, batch_size: int, workers: int,
    device: str | None, overwrite: bool, console: Console,
) -> str:
    """Write the index `out` (NAME.json + NAME.npy) of either --images/--coords or --dataset's
    reference tiles, embedded by `checkpoint`; the line that says what was written."""
    if (images is None) != (coords is None) or (images is None) == (dataset is None):
        raise UserInputError(
            f"give either {Flag.IMAGES} DIR {Flag.COORDS} FILE.csv, or {Flag.DATASET} NAME {Flag.DATA_ROOT} DIR")
    if batch_size < 1 or workers < 0:
        raise UserInputError(
            f"{Flag.BATCH_SIZE} must be at least 1 and {Flag.WORKERS} at least 0, got {batch_size} and {workers}")
    meta_path, npy_path = index_paths(out)
    # --out names the index by NAME; an existing file of that very name is refused like any output
    named = [(Path(out), INDEX_FILE)] if Path(out).is_file() and Path(out) not in (meta_path, npy_path) else []
    for path, output_kind in ((meta_path, INDEX_FILE), (npy_path, INDEX_EMBEDDINGS), *named):
        check_output(path, output_kind, option=Flag.OUT, overwrite=overwrite,
                     inputs=[(Flag.CHECKPOINT, checkpoint), (Flag.COORDS, coords), (Flag.DATA_ROOT, data_root)])
    dev = pick_device(device)
    kind = "aerial"
    root: Path | str
    if dataset is not None:
        spec = datasets.get(dataset)
        root = spec.data_root(data_root)
        ev = spec.load_eval(root, spec.check_split(split), split_dir=split_dir)
        kind = ev.reference_kind
        files = [os.path.relpath(f, root) for f in ev.reference_files]
        if ev.reference_lat is None or ev.reference_lon is None:
            console.print(f"[yellow]note:[/] {dataset} has no tile coordinates; locate will list tiles without lat/lon")
            lat = lon = np.full(len(files), np.nan)
        else:
            lat, lon = ev.reference_lat, ev.reference_lon
    else:
        assert images is not None and coords is not None  # checked above
        root = images
        files, lat, lon = read_tiles(coords, images)
    meta = build_index(checkpoint, files, lat, lon, root, out, reference_kind=kind, float16=float16,
                       device=dev, batch_size=batch_size, workers=workers)
    spacing = meta["tile_spacing_m"]
    return (f"wrote {meta_path} and {npy_path.name}: {meta['count']} tiles, {meta['model']['embed_dim']}-d "
            f"{meta['dtype']} embeddings ({meta['model']['backbone']})"
            + (f", median tile spacing {spacing:.1f} m" if spacing else ""))


__all__ = ["index_tiles"]
