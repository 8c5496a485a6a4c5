"""`s4g index` and `s4g locate`: embed geo-tagged tiles once, then locate photos against them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from s4g.app.cli.app import command, console, require_paths
from s4g.app.cli.options import DatasetName, Device, value
from s4g.flags import Flag


@command("index")
def index_cmd(
    checkpoint: Annotated[Path, typer.Option(
        Flag.CHECKPOINT, help="Model checkpoint (s4g, or timm/Sample4Geo weights).")],
    out: Annotated[Path, typer.Option(Flag.OUT, help="Index to write: NAME.json and NAME.npy (give NAME).")],
    images: Annotated[Path | None, typer.Option(
        Flag.IMAGES, help=f"Folder of aerial tiles (with {Flag.COORDS}).")] = None,
    coords: Annotated[Path | None, typer.Option(Flag.COORDS, help="CSV with a header naming file, lat, lon.")] = None,
    dataset: Annotated[DatasetName | None, typer.Option(
        Flag.DATASET, help=f"Index this dataset's reference tiles (with {Flag.DATA_ROOT}).")] = None,
    data_root: Annotated[Path | None, typer.Option(Flag.DATA_ROOT, help="Dataset folder.")] = None,
    split: Annotated[str | None, typer.Option(
        Flag.SPLIT, help="Dataset split (default: the preset's eval split).")] = None,
    split_dir: Annotated[str, typer.Option(Flag.SPLIT_DIR, help="Folder of split files.")] = "splits",
    float16: Annotated[bool, typer.Option(Flag.FLOAT16, help="Store embeddings as float16 (half the size).")] = False,
    batch_size: Annotated[int, typer.Option(Flag.BATCH_SIZE, help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(Flag.WORKERS, help="DataLoader worker processes.")] = 0,
    device: Device = None,
    overwrite: Annotated[bool, typer.Option(Flag.OVERWRITE, help="Replace an existing index.")] = False,
) -> None:
    """Embed geo-tagged aerial tiles into an index file that s4g locate searches."""
    require_paths((Flag.CHECKPOINT, checkpoint), (Flag.IMAGES, images), (Flag.COORDS, coords),
                  (Flag.DATA_ROOT, data_root))
    from s4g.app.jobs.index import index_tiles

    console.print(index_tiles(
        checkpoint=checkpoint, out=out, images=images, coords=coords, dataset=value(dataset),
        data_root=data_root, split=split, split_dir=split_dir, float16=float16, batch_size=batch_size,
        workers=workers, device=device, overwrite=overwrite, console=console))


@command("locate")
def locate_cmd(
    photos: Annotated[list[Path], typer.Argument(
        metavar="PHOTO", help=f"Ground photos: panoramas, or limited field of view with {Flag.FOV}.")],
    index: Annotated[Path, typer.Option(Flag.INDEX, help="Index made by s4g index (NAME, NAME.json or NAME.npy).")],
    checkpoint: Annotated[Path | None, typer.Option(
        Flag.CHECKPOINT, help="Checkpoint (default: the one recorded in the index).")] = None,
    k: Annotated[int, typer.Option(Flag.K, help="Tiles listed per photo.")] = 5,
    fov: Annotated[float | None, typer.Option(
        Flag.FOV, help="The photos' horizontal field of view, degrees (default: 360° panoramas).")] = None,
    heading: Annotated[float | None, typer.Option(
        Flag.HEADING, help="Compass heading of a panorama's centre column, degrees.")] = None,
    radius: Annotated[float | None, typer.Option(
        Flag.RADIUS, help="Metres within which top-k tiles agree (default: 2 tile spacings).")] = None,
    json_out: Annotated[bool, typer.Option(Flag.JSON, help="Print JSON instead of tables.")] = False,
    geojson: Annotated[Path | None, typer.Option(
        Flag.GEOJSON,
        help="Also write the top-k tiles (and consensus positions) as GeoJSON points, for QGIS or a web map.")] = None,
    picture: Annotated[Path | None, typer.Option(
        Flag.PICTURE, help="Also draw a PNG: each photo beside its top-k tiles with score and coordinates.")] = None,
    device: Device = None,
    overwrite: Annotated[bool, typer.Option(
        Flag.OVERWRITE, help=f"Replace an existing {Flag.GEOJSON} or {Flag.PICTURE} file.")] = False,
) -> None:
    """Locate ground photos: their most similar aerial tiles and a consensus position."""
    import json

    from s4g.app.jobs.locate import check_locate_options, locate_job

    check_locate_options(k=k, fov_deg=fov, heading_deg=heading, radius_m=radius)
    require_paths(*(("a photo", p) for p in photos), (Flag.CHECKPOINT, checkpoint))
    found, written = locate_job(photos, index=index, checkpoint=checkpoint, k=k, fov_deg=fov, heading_deg=heading,
                                radius_m=radius, geojson=geojson, picture=picture, device=device, overwrite=overwrite)
    if json_out:
        print(json.dumps(found, indent=2))
        return
    for item in found:
        _print_location(item)
    for line in written:
        console.print(line)


def _print_location(item: dict) -> None:
    from rich.table import Table

    def deg(v):
        return "—" if v is None else f"{v:.6f}"

    table = Table(title=item["photo"], title_justify="left")
    for name in ("rank", "tile", "lat", "lon", "score"):
        table.add_column(name, justify="left" if name == "tile" else "right")
    for r in item["results"]:
        table.add_row(str(r["rank"]), r["file"], deg(r["lat"]), deg(r["lon"]), f"{r['score']:.4f}")
    console.print(table)
    agreed = item["consensus"]
    if agreed:
        console.print(
            f"consensus: {agreed['lat']:.6f}, {agreed['lon']:.6f} (ranks "
            f"{', '.join(map(str, agreed['ranks']))} within {agreed['radius_m']:.0f} m)"
        )
    else:
        console.print("consensus: none (no two of the top tiles are close together)")
