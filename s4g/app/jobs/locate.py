"""Locate ground photos: embed each one, look its nearest aerial tiles up in an index, and
find where the top tiles agree."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4g.errors import UserInputError
from s4g.fileio import json_kind
from s4g.flags import Flag
from s4g.geo import haversine_m
from s4g.model.checkpoint import load_checkpoint
from s4g.pipeline.transforms import View, check_fov, fov_size
from s4g.retrieval.embed import embed_files
from s4g.retrieval.index import Index, same_checkpoint, search

PHOTO_BATCH = 16
#: The kind of file `s4g locate --geojson` writes (s4g.fileio.check_output).
GEOJSON_FILE = json_kind("a GeoJSON file written by s4g", "type", "features")

def consensus(lat: np.ndarray, lon: np.ndarray, scores: np.ndarray, radius_m: float) -> dict[str, Any] | None:
    """Where several of a photo's top-k tiles agree.

    lat, lon, scores: (k,) of the top-k tiles, best first. For each tile, its neighbourhood
    is the top-k tiles within radius_m of it; the neighbourhood with the largest summed
    (non-negative) score wins, ties to the better-ranked centre. With at least two members
    the consensus is their score-weighted mean position (on the sphere); else None.
    -> {"lat", "lon" degrees, "ranks": 1-based ranks of the members, "radius_m"} or None.
    """
    ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(lon))
    if ok.size < 2:
        return None
    near = haversine_m(lat[ok, None], lon[ok, None], lat[None, ok], lon[None, ok]) <= radius_m
    weight = np.maximum(np.asarray(scores, dtype=np.float64)[ok], 0.0)
    mass = near @ weight
    mass[near.sum(axis=1) < 2] = -1.0
    centre = int(np.argmax(mass))
    if mass[centre] < 0:
        return None
    members = ok[near[centre]]
    w = weight[near[centre]]
    w = w / w.sum() if w.sum() > 0 else np.full(members.size, 1.0 / members.size)
    phi, lam = np.radians(lat[members]), np.radians(lon[members])
    x = (w * np.cos(phi) * np.cos(lam)).sum()
    y = (w * np.cos(phi) * np.sin(lam)).sum()
    z = (w * np.sin(phi)).sum()
    return {
        "lat": float(np.degrees(np.arctan2(z, math.hypot(x, y)))),
        "lon": float(np.degrees(np.arctan2(y, x))),
        "ranks": [int(r) + 1 for r in members],
        "radius_m": float(radius_m),
    }


def check_same_model(index: Index, model, checkpoint: str | os.PathLike) -> None:
    """UserInputError unless `model` (loaded from `checkpoint`) made the index's embeddings."""
    made = index.meta.get("model", {})
    if (made.get("backbone"), made.get("embed_dim")) != (model.backbone, model.embed_dim):
        raise UserInputError(
            f"{index.path} was made by a {made.get('backbone')} model ({made.get('embed_dim')}-d "
            f"embeddings) but {checkpoint} is a {model.backbone} ({model.embed_dim}-d); use the "
            "index's checkpoint or rebuild the index with s4g index"
        )
    recorded = made.get("checkpoint", {})
    if not same_checkpoint(checkpoint, recorded):
        raise UserInputError(
            f"{checkpoint} is not the checkpoint {index.path} was made with ({recorded.get('path')}, "
            f"sha256 {str(recorded.get('sha256'))[:12]}…): its embeddings are not comparable; "
            "rebuild the index with s4g index"
        )


def index_checkpoint(index: Index, checkpoint: str | os.PathLike | None) -> Path:
    """The checkpoint to embed photos with: the given one, else the one the index records."""
    if checkpoint is not None:
        return Path(checkpoint)
    recorded = index.meta.get("model", {}).get("checkpoint", {}).get("path")
    if not recorded or not Path(recorded).is_file():
        raise UserInputError(
            f"{index.path} was made with the checkpoint {recorded}, which is not there any more; "
            f"pass it with {Flag.CHECKPOINT}"
        )
    return Path(recorded)


def check_locate_options(*, k: int, fov_deg: float | None, heading_deg: float | None, radius_m: float | None) -> None:
    """UserInputError naming the option (as spelled on the command line) that locate_photos
    cannot take; cheap, so the CLI runs it before opening the index."""
    check_fov(fov_deg)
    if heading_deg is not None and fov_deg is not None:
        raise UserInputError(
            f"{Flag.HEADING} rolls a panorama north-up; a limited field-of-view photo ({Flag.FOV}) is "
            f"embedded as taken, so drop {Flag.HEADING}"
        )
    if heading_deg is not None and not math.isfinite(heading_deg):
        raise UserInputError(f"{Flag.HEADING} must be a finite number of degrees, got {heading_deg}")
    if k < 1:
        raise UserInputError(f"{Flag.K} must be at least 1, got {k}")
    if radius_m is not None and not 0 < radius_m < math.inf:
        raise UserInputError(f"{Flag.RADIUS} must be a finite positive number of metres, got {radius_m}")


def locate_photos(
    index: Index,
    photos: Sequence[str | os.PathLike],
    *,
    checkpoint: str | os.PathLike | None = None,
    k: int = 5,
    fov_deg: float | None = None,
    heading_deg: float | None = None,
    radius_m: float | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Top-k tiles and a consensus location for each photo.

    fov_deg: the photos' horizontal field of view (None = full panoramas); heading_deg: the
    compass heading of a panorama's centre column (panoramas only). radius_m: tiles closer
    than this count as agreeing (default: twice the index's median tile spacing).
    -> one dict per photo: {"photo", "results": [{"rank" (1 = best), "row" (the tile's
       0-based row in the index: its entry in index.files, lat, lon and the embeddings),
       "file", "path", "lat", "lon", "score"}], "consensus": what `consensus` (above)
       returns, or None}. lat/lon None when unknown.
    """
    check_locate_options(k=k, fov_deg=fov_deg, heading_deg=heading_deg, radius_m=radius_m)
    checkpoint = index_checkpoint(index, checkpoint)
    model, _ = load_checkpoint(checkpoint)
    check_same_model(index, model, checkpoint)
    made = index.meta["model"]
    if heading_deg is not None:
        # A panorama whose centre faces `heading` is turned north-up: its full 360° "view" is
        # cut at -heading (the column facing north), the convention of s4g.pipeline.transforms.
        view = View(made["aerial_size"], made["ground_size"], fov=360.0, heading_deg=-float(heading_deg))
    else:
        # a limited-view photo is the cut already: embedded whole, at the size the cut has
        view = View(made["aerial_size"], fov_size(made["ground_size"], fov_deg))
    emb = embed_files(model, [str(p) for p in photos], view, "panorama", device=device, batch_size=PHOTO_BATCH,
                      progress=False, label="photos")
    assert emb is not None  # no process group: every row is here
    rows, scores = search(index, emb, k)
    spacing = index.meta.get("tile_spacing_m")
    if radius_m is None:
        radius_m = 2.0 * spacing if spacing else None
    return [_photo_result(index, str(p), r, s, radius_m) for p, r, s in zip(photos, rows, scores)]


def locate_job(
    photos: Sequence[Path], *, index: Path, checkpoint: Path | None, k: int, fov_deg: float | None,
    heading_deg: float | None, radius_m: float | None, geojson: Path | None, picture: Path | None,
    device: str | None, overwrite: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The job of `s4g locate`: locate `photos` in the index file `index` (locate_photos), and
    write the --geojson and --picture files asked for; (one dict per photo, one line per file
    written)."""
    from s4g.fileio import PNG_IMAGE, check_distinct_outputs, check_output, marked, save_json
    from s4g.retrieval.index import open_index
    from s4g.runtime import pick_device

    inputs = [(Flag.INDEX, index), (Flag.CHECKPOINT, checkpoint), *(("a photo", p) for p in photos)]
    outputs = ((geojson, GEOJSON_FILE, Flag.GEOJSON), (picture, PNG_IMAGE, Flag.PICTURE))
    check_distinct_outputs((option, path) for path, _, option in outputs)
    for path, kind, option in outputs:
        if path is not None:
            check_output(path, kind, option=option, overwrite=overwrite, inputs=inputs)
    tiles = open_index(index)
    if geojson is not None and not tiles.meta.get("has_coordinates"):
        raise UserInputError(f"{Flag.GEOJSON}: {index} holds no tile coordinates, so there is nothing to put on a map")
    found = locate_photos(tiles, [str(p) for p in photos], checkpoint=checkpoint, k=k, fov_deg=fov_deg,
                          heading_deg=heading_deg, radius_m=radius_m, device=pick_device(device))
    written = []
    if geojson is not None:
        save_json(geojson, marked(locations_geojson(found)))
        written.append(f"GeoJSON written to {geojson}")
    if picture is not None:
        from s4g.app.pictures import locate_picture, save_png

        save_png(picture, locate_picture(found, index_name=Path(index).name))
        written.append(f"picture written to {picture}")
    return found, written


def locations_geojson(found: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The candidate tiles of located photos (locate_photos's dicts) as a GeoJSON (RFC 7946)
    FeatureCollection.

    One Point feature per candidate tile at its centre, coordinates [lon, lat] in WGS 84
    degrees, properties {"kind": "candidate", "photo", "rank" (1 = best), "score", "tile"
    (file as listed in the index), "path"}; one more per photo with a consensus position,
    properties {"kind": "consensus", "photo", "ranks", "radius_m"}. A tile without
    coordinates is an unlocated feature (geometry null, RFC 7946 section 3.2).
    """
    def point(lat, lon):
        return None if lat is None or lon is None else {"type": "Point", "coordinates": [lon, lat]}

    features = []
    for item in found:
        for r in item["results"]:
            features.append({"type": "Feature", "geometry": point(r["lat"], r["lon"]), "properties": {
                "kind": "candidate", "photo": item["photo"], "rank": r["rank"], "score": r["score"],
                "tile": r["file"], "path": r["path"]}})
        agreed = item["consensus"]
        if agreed:
            features.append({"type": "Feature", "geometry": point(agreed["lat"], agreed["lon"]), "properties": {
                "kind": "consensus", "photo": item["photo"], "ranks": agreed["ranks"],
                "radius_m": agreed["radius_m"]}})
    return {"type": "FeatureCollection", "features": features}


def _photo_result(index: Index, photo: str, rows: np.ndarray, scores: np.ndarray, radius_m) -> dict[str, Any]:
    lat = np.asarray(index.lat[rows], dtype=np.float64)
    lon = np.asarray(index.lon[rows], dtype=np.float64)
    results = [
        {
            "rank": rank + 1,
            "row": int(row),
            "file": str(index.files[row]),
            "path": index.file_path(int(row)),
            "lat": float(lat[rank]) if np.isfinite(lat[rank]) else None,
            "lon": float(lon[rank]) if np.isfinite(lon[rank]) else None,
            "score": float(scores[rank]),
        }
        for rank, row in enumerate(rows)
    ]
    agreed = consensus(lat, lon, scores, radius_m) if radius_m else None
    return {"photo": photo, "results": results, "consensus": agreed}
