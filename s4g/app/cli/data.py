"""`s4g synth` and `s4g neighbours`: write a dataset tree, and GPS neighbour lists."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from s4g.app.cli.app import command, console, err_console
from s4g.app.cli.options import (
    DatasetName,
    ImageSizes,
    Layout,
    Lists,
    Palette,
    VigorLayout,
    choice,
    lists_option,
    metavar,
    value,
)
from s4g.flags import Flag


@command("synth")
def synth_cmd(
    layout: Annotated[Layout, typer.Option(
        Flag.LAYOUT, parser=choice(Layout), metavar=metavar(Layout),
        help="Dataset layout to write: cvusa, cvact, vigor or university.")],
    out: Annotated[Path, typer.Option(Flag.OUT, help="Dataset root to write (new or empty folder).")],
    locations: Annotated[int, typer.Option(
        Flag.LOCATIONS, help="Pairs (cvusa, cvact), panoramas (vigor) or buildings (university) in all.")] = 1000,
    seed: Annotated[int, typer.Option(Flag.SEED, help="World and split seed; same seed, same files.")] = 0,
    size: Annotated[ImageSizes, typer.Option(
        Flag.SIZE, parser=choice(ImageSizes), metavar=metavar(ImageSizes),
        help="Image sizes: small (fast) or real (the releases' sizes).")] = ImageSizes.small,
    palette: Annotated[Palette, typer.Option(
        Flag.PALETTE, parser=choice(Palette), metavar=metavar(Palette),
        help="unique: one colour a building (learnable); paired: 16 shared colours; shared: independent roof/wall "
             "materials (hard).")] = Palette.unique,
    shading: Annotated[float, typer.Option(Flag.SHADING, help="Sun shading strength in [0, 1].")] = 0.5,
    shadows: Annotated[bool, typer.Option(
        f"{Flag.SHADOWS}/{Flag.NO_SHADOWS}", help="Cast shadows in the aerial colours.")] = True,
    jitter: Annotated[float, typer.Option(Flag.JITTER, help="Per-image colour jitter amplitude in [0, 1).")] = 0.03,
    vigor_layout: Annotated[VigorLayout, typer.Option(
        Flag.VIGOR_LAYOUT, parser=choice(VigorLayout), metavar=metavar(VigorLayout),
        help="vigor only: original ({City}/satellite) or reference (satellite/{City}).")] = VigorLayout.original,
    cvact_missing: Annotated[int, typer.Option(
        Flag.CVACT_MISSING, help="cvact only: train/val ids with one image left out.")] = 2,
    drone_views: Annotated[int, typer.Option(Flag.DRONE_VIEWS, help="university only: drone views a building.")] = 8,
    workers: Annotated[int | None, typer.Option(
        Flag.WORKERS, help="Worker processes (default: usable CPUs, at most 8).")] = None,
    overwrite: Annotated[bool, typer.Option(
        f"{Flag.OVERWRITE}/{Flag.NO_OVERWRITE}",
        help=f"Replace an earlier s4g synth world in {Flag.OUT} (its files are moved beside it, not deleted), or "
             "write into a non-empty folder that s4g synth did not write (never over its files); replace a "
             f"{Flag.PREVIEW} that s4g wrote.")] = False,
    preview: Annotated[Path | None, typer.Option(
        Flag.PREVIEW, help="Also save one aerial/panorama pair side by side to this PNG.")] = None,
) -> None:
    """Write a synthetic dataset in the exact on-disk layout of a benchmark."""
    from s4g.app.jobs.synth import write_world

    console.print(write_world(
        layout.value, out, locations=locations, seed=seed, size=size.value, palette=palette.value, shading=shading,
        shadows=shadows, jitter=jitter, vigor_layout=vigor_layout.value, cvact_missing=cvact_missing,
        drone_views=drone_views, workers=workers, preview=preview, overwrite=overwrite, progress_console=err_console))


@command("neighbours")
def neighbours_cmd(
    out: Annotated[
        Path, typer.Option(Flag.OUT, help="Output .npz with idx (N,k) int64 and dist_m (N,k) float64.")
    ],
    coords: Annotated[
        Path | None, typer.Option(Flag.COORDS, help="CSV whose header names lat and lon columns (degrees).")
    ] = None,
    dataset: Annotated[
        DatasetName | None, typer.Option(Flag.DATASET, help="Dataset; uses its training classes' GPS.")
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(Flag.DATA_ROOT, help=f"Root folder of {Flag.DATASET}.")
    ] = None,
    split_dir: Annotated[str, typer.Option(Flag.SPLIT_DIR, help=f"Split folder of {Flag.DATASET}.")] = "splits",
    k: Annotated[int, typer.Option(Flag.K, help="Neighbours per point (exact, haversine).")] = 128,
    lists: Annotated[Lists, lists_option()] = Lists.s4g,
    overwrite: Annotated[bool, typer.Option(Flag.OVERWRITE, help="Replace an existing neighbours file.")] = False,
) -> None:
    """Exact k nearest GPS neighbours of every point (or every class of a dataset)."""
    from s4g.app.jobs.neighbours import write_gps_neighbours

    console.print(write_gps_neighbours(
        out=out, coords=coords, dataset=value(dataset), data_root=data_root, split_dir=split_dir, k=k,
        lists=lists.value, overwrite=overwrite, console=console))
