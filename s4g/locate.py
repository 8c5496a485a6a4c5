"""Locate ground photos: embed each one and look its nearest aerial tiles up in an index."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4g.data.transforms import fov_size
from s4g.errors import UserInputError
from s4g.index import Index, consensus, same_checkpoint, search

PHOTO_BATCH = 16


def embed_photos(
    model: torch.nn.Module,
    photos: Sequence[str | os.PathLike],
    size_hw: tuple[int, int],
    *,
    heading_deg: float | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(N, D) float32 L2-normalised embeddings of ground photos, resized to size_hw.

    heading_deg: for panoramas, the compass heading their centre column faces; the panorama
    is rolled so that north is centred, the convention of s4g.data.transforms.
    Undecodable photos raise UserInputError naming the file.
    """
    from s4g.data.images import load_image
    from s4g.data.transforms import crop_fov, eval_transform

    transform = eval_transform(size_hw)
    model = model.to(device).eval()
    out = []
    for start in range(0, len(photos), PHOTO_BATCH):
        batch = []
        for photo in photos[start : start + PHOTO_BATCH]:
            image = load_image(photo)
            if heading_deg is not None:
                # the column facing north sits at heading -heading_deg relative to the centre
                image = crop_fov(image, 360.0, -float(heading_deg))
            batch.append(transform(image))
        with torch.inference_mode():
            out.append(model(torch.stack(batch).to(device)).float().cpu().numpy())
    return np.concatenate(out)


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
            "pass it with --checkpoint"
        )
    return Path(recorded)


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
    -> one dict per photo: {"photo", "results": [{"rank", "file", "path", "lat", "lon",
       "score"}], "consensus": see s4g.index.consensus, or None}. lat/lon None when unknown.
    """
    from s4g.model import load_checkpoint

    if heading_deg is not None and fov_deg is not None:
        raise UserInputError(
            "--heading rolls a panorama north-up; a limited field-of-view photo (--fov) is "
            "embedded as taken, so drop --heading"
        )
    if k < 1:
        raise UserInputError(f"--k must be at least 1, got {k}")
    if radius_m is not None and not radius_m > 0:
        raise UserInputError(f"--radius must be a positive number of metres, got {radius_m}")
    checkpoint = index_checkpoint(index, checkpoint)
    model, _ = load_checkpoint(checkpoint)
    check_same_model(index, model, checkpoint)
    size = fov_size(index.meta["model"]["ground_size"], fov_deg)
    emb = embed_photos(model, photos, size, heading_deg=heading_deg, device=device)
    rows, scores = search(index, emb, k)
    spacing = index.meta.get("tile_spacing_m")
    if radius_m is None:
        radius_m = 2.0 * spacing if spacing else None
    return [_photo_result(index, str(p), r, s, radius_m) for p, r, s in zip(photos, rows, scores)]


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
