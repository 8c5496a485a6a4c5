"""`s4g synth` and `s4g neighbours`: write a dataset tree, and GPS neighbour lists."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from s4g.app.cli.app import LISTS_HELP, DatasetName, command, console, dataset_name, err_console
from s4g.data import registry as datasets
from s4g.errors import UserInputError
from s4g.fileio import PNG_IMAGE, check_distinct_outputs, check_output, npz_kind

NEIGHBOURS_FILE = npz_kind("an s4g neighbours file", "idx", "dist_m")


@command("synth")
def synth_cmd(
    layout: Annotated[str, typer.Option(help="Dataset layout to write: cvusa, cvact, vigor or university.")],
    out: Annotated[Path, typer.Option(help="Dataset root to write (new or empty folder).")],
    locations: Annotated[int, typer.Option(help="Pairs (cvusa, cvact), panoramas (vigor) or buildings (university) in all.")] = 1000,
    seed: Annotated[int, typer.Option(help="World and split seed; same seed, same files.")] = 0,
    size: Annotated[str, typer.Option(help="Image sizes: small (fast) or real (the releases' sizes).")] = "small",
    palette: Annotated[str, typer.Option(help="unique: one colour a building (learnable); paired: 16 shared colours; shared: independent roof/wall materials (hard).")] = "unique",
    shading: Annotated[float, typer.Option(help="Sun shading strength in [0, 1].")] = 0.5,
    shadows: Annotated[bool, typer.Option(help="Cast shadows in the aerial colours.")] = True,
    jitter: Annotated[float, typer.Option(help="Per-image colour jitter amplitude in [0, 1).")] = 0.03,
    vigor_layout: Annotated[str, typer.Option(help="vigor only: original ({City}/satellite) or reference (satellite/{City}).")] = "original",
    cvact_missing: Annotated[int, typer.Option(help="cvact only: train/val ids with one image left out.")] = 2,
    drone_views: Annotated[int, typer.Option(help="university only: drone views a building.")] = 8,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: usable CPUs, at most 8).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier s4g synth world in --out (its files are moved beside it, not deleted), or write into a non-empty folder that s4g synth did not write (never over its files); replace a --preview that s4g wrote.")] = False,
    preview: Annotated[Optional[Path], typer.Option(help="Also save one aerial/panorama pair side by side to this PNG.")] = None,
) -> None:
    """Write a synthetic dataset in the exact on-disk layout of a benchmark."""
    from s4g.app.synth.preview import save_preview
    from s4g.app.synth.writer import write_layout
    from s4g.runtime import progress

    if preview is not None:
        check_distinct_outputs([("--out", out), ("--preview", preview)])
        check_output(preview, PNG_IMAGE, option="--preview", overwrite=overwrite)
    with progress(console=err_console) as bar:
        task = bar.add_task(f"synth {layout}", total=None)
        manifest = write_layout(
            layout, out, locations=locations, seed=seed, size=size, palette=palette, shading=shading,
            shadows=shadows, jitter=jitter, vigor_layout=vigor_layout, cvact_missing=cvact_missing,
            drone_views=drone_views, workers=workers, overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    if preview is not None:
        save_preview(preview, seed=seed, palette=palette, shading=shading, shadows=shadows)
    console.print(f"wrote {len(manifest['files'])} files of the {layout} layout to {out}")


@command("neighbours")
def neighbours_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Output .npz with idx (N,k) int64 and dist_m (N,k) float64.")
    ],
    coords: Annotated[
        Optional[Path], typer.Option("--coords", help="CSV whose header names lat and lon columns (degrees).")
    ] = None,
    dataset: Annotated[
        Optional[DatasetName], typer.Option("--dataset", help="Dataset; uses its training classes' GPS.")
    ] = None,
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", help="Root folder of --dataset.")
    ] = None,
    split_dir: Annotated[str, typer.Option("--split-dir", help="Split folder of --dataset.")] = "splits",
    k: Annotated[int, typer.Option("--k", help="Neighbours per point (exact, haversine).")] = 128,
    lists: Annotated[str, typer.Option(metavar="s4g|released", help=LISTS_HELP)] = "s4g",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing neighbours file.")] = False,
) -> None:
    """Exact k nearest GPS neighbours of every point (or every class of a dataset)."""
    dataset = dataset_name(dataset)
    import numpy as np

    from s4g.data.tables import read_coords
    from s4g.fileio import save_npz
    from s4g.geo import haversine_m
    from s4g.retrieval.released import check_lists, released_gps_neighbours
    from s4g.sampling import gps_neighbours

    check_lists(lists)
    if (coords is None) == (dataset is None):
        raise UserInputError("give either --coords FILE.csv or --dataset NAME --data-root DIR")
    if coords is not None:
        lat, lon = read_coords(coords)
        source = str(coords)
    else:
        spec = datasets.get(dataset)
        if not spec.has_gps:
            raise UserInputError(f"--dataset {dataset} has no GPS coordinates to find neighbours by")
        root = spec.data_root(data_root)
        train = spec.load_train(root, split_dir=split_dir)
        lat, lon = train.class_lat, train.class_lon
        source = f"{dataset} classes in {root}"
    if k < 1 or k >= len(lat):
        raise UserInputError(
            f"--k {k}: must be at least 1 and smaller than the number of points ({len(lat)}) in {source}"
        )
    check_output(out, NEIGHBOURS_FILE, option="--out", overwrite=overwrite, inputs=[("--coords", coords), ("--data-root", data_root)])
    start = time.perf_counter()
    with console.status(f"exact {k}-NN of {len(lat):,} points..."):
        if lists == "released":
            idx = released_gps_neighbours(lat, lon, k)
            dist = haversine_m(np.asarray(lat)[:, None], np.asarray(lon)[:, None], np.asarray(lat)[idx],
                               np.asarray(lon)[idx])
        else:
            idx, dist = gps_neighbours(lat, lon, k)
    seconds = time.perf_counter() - start
    save_npz(out, idx=idx, dist_m=dist)
    console.print(
        f"{len(lat):,} points from {source}, k={k}: {seconds:.2f} s; "
        f"median nearest {np.median(dist[:, 0]):.1f} m; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
    )
