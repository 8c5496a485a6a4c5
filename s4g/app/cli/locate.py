"""`s4g index` and `s4g locate`: embed geo-tagged tiles once, then locate photos against them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from s4g.app.cli.app import DatasetName, command, console, dataset_name, require_paths
from s4g.data import registry as datasets
from s4g.errors import UserInputError


@command("index")
def index_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (s4g, or timm/Sample4Geo weights).")],
    out: Annotated[Path, typer.Option(help="Index to write: NAME.json and NAME.npy (give NAME).")],
    images: Annotated[Optional[Path], typer.Option(help="Folder of aerial tiles (with --coords).")] = None,
    coords: Annotated[Optional[Path], typer.Option(help="CSV with a header naming file, lat, lon.")] = None,
    dataset: Annotated[Optional[DatasetName], typer.Option(help="Index this dataset's reference tiles (with --data-root).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset folder.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Dataset split (default: the preset's eval split).")] = None,
    split_dir: Annotated[str, typer.Option(help="Folder of split files.")] = "splits",
    float16: Annotated[bool, typer.Option("--float16", help="Store embeddings as float16 (half the size).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index.")] = False,
) -> None:
    """Embed geo-tagged aerial tiles into an index file that s4g locate searches."""
    dataset = dataset_name(dataset)
    require_paths(("--checkpoint", checkpoint), ("--images", images), ("--coords", coords), ("--data-root", data_root))
    import os

    import numpy as np

    from s4g.data.tables import read_tiles
    from s4g.fileio import check_output
    from s4g.retrieval.index import INDEX_EMBEDDINGS, INDEX_FILE, build_index, index_paths
    from s4g.runtime import pick_device

    if (images is None) != (coords is None) or (images is None) == (dataset is None):
        raise UserInputError("give either --images DIR --coords FILE.csv, or --dataset NAME --data-root DIR")
    if batch_size < 1 or workers < 0:
        raise UserInputError(f"--batch-size must be at least 1 and --workers at least 0, got {batch_size} and {workers}")
    meta_path, npy_path = index_paths(out)
    # --out names the index by NAME; an existing file of that very name is refused like any output
    named = [(Path(out), INDEX_FILE)] if Path(out).is_file() and Path(out) not in (meta_path, npy_path) else []
    for path, kind in ((meta_path, INDEX_FILE), (npy_path, INDEX_EMBEDDINGS), *named):
        check_output(path, kind, option="--out", overwrite=overwrite,
                     inputs=[("--checkpoint", checkpoint), ("--coords", coords), ("--data-root", data_root)])
    dev = pick_device(device)
    kind = "aerial"
    if dataset is not None:
        spec = datasets.get(dataset)
        root = spec.data_root(data_root)
        ev = spec.load_eval(root, spec.check_split(split), split_dir=split_dir)
        kind = ev.reference_kind
        files = [os.path.relpath(f, root) for f in ev.reference_files]
        n = len(files)
        if ev.reference_lat is None or ev.reference_lon is None:
            console.print(f"[yellow]note:[/] {dataset} has no tile coordinates; locate will list tiles without lat/lon")
            lat = lon = np.full(n, np.nan)
        else:
            lat, lon = ev.reference_lat, ev.reference_lon
    else:
        root = images
        files, lat, lon = read_tiles(coords, images)
    meta = build_index(
        checkpoint, files, lat, lon, root, out, reference_kind=kind, float16=float16,
        device=dev, batch_size=batch_size, workers=workers,
    )
    spacing = meta["tile_spacing_m"]
    console.print(
        f"wrote {meta_path} and {npy_path.name}: {meta['count']} tiles, {meta['model']['embed_dim']}-d {meta['dtype']} "
        f"embeddings ({meta['model']['backbone']})"
        + (f", median tile spacing {spacing:.1f} m" if spacing else "")
    )


@command("locate")
def locate_cmd(
    photos: Annotated[list[Path], typer.Argument(metavar="PHOTO", help="Ground photos: panoramas, or limited field of view with --fov.")],
    index: Annotated[Path, typer.Option(help="Index made by s4g index (NAME, NAME.json or NAME.npy).")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the one recorded in the index).")] = None,
    k: Annotated[int, typer.Option(help="Tiles listed per photo.")] = 5,
    fov: Annotated[Optional[float], typer.Option(help="The photos' horizontal field of view, degrees (default: 360° panoramas).")] = None,
    heading: Annotated[Optional[float], typer.Option(help="Compass heading of a panorama's centre column, degrees.")] = None,
    radius: Annotated[Optional[float], typer.Option(help="Metres within which top-k tiles agree (default: 2 tile spacings).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    geojson: Annotated[Optional[Path], typer.Option(
        help="Also write the top-k tiles (and consensus positions) as GeoJSON points, for QGIS or a web map.")] = None,
    picture: Annotated[Optional[Path], typer.Option(
        help="Also draw a PNG: each photo beside its top-k tiles with score and coordinates.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --geojson or --picture file.")] = False,
) -> None:
    """Locate ground photos: their most similar aerial tiles and a consensus position."""
    import json

    from s4g.app.jobs.locate import GEOJSON_FILE, check_locate_options, locate_photos
    from s4g.fileio import PNG_IMAGE, check_distinct_outputs, check_output
    from s4g.retrieval.index import open_index
    from s4g.runtime import pick_device

    check_locate_options(k=k, fov_deg=fov, heading_deg=heading, radius_m=radius)
    require_paths(*(("a photo", p) for p in photos), ("--checkpoint", checkpoint))
    inputs = [("--index", index), ("--checkpoint", checkpoint), *(("a photo", p) for p in photos)]
    outputs = ((geojson, GEOJSON_FILE, "--geojson"), (picture, PNG_IMAGE, "--picture"))
    check_distinct_outputs((option, path) for path, _, option in outputs)
    for path, kind, option in outputs:
        if path is not None:
            check_output(path, kind, option=option, overwrite=overwrite, inputs=inputs)
    tiles = open_index(index)
    if geojson is not None and not tiles.meta.get("has_coordinates"):
        raise UserInputError(f"--geojson: {index} holds no tile coordinates, so there is nothing to put on a map")
    found = locate_photos(
        tiles, [str(p) for p in photos], checkpoint=checkpoint, k=k, fov_deg=fov,
        heading_deg=heading, radius_m=radius, device=pick_device(device),
    )
    written = []
    if geojson is not None:
        from s4g.app.jobs.locate import locations_geojson
        from s4g.fileio import marked, save_json

        save_json(geojson, marked(locations_geojson(found)))
        written.append(f"GeoJSON written to {geojson}")
    if picture is not None:
        from s4g.app.pictures import locate_picture, save_png

        save_png(picture, locate_picture(found, index_name=index.name))
        written.append(f"picture written to {picture}")
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
