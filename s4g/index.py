"""A geo-tagged index of aerial tiles, and single-photo search against it.

Index file: one uncompressed .npz (readable with plain `np.load`) whose members are
  embeddings (N, D) float32 or float16, rows L2-normalised;
  lat, lon (N,) float64 degrees (NaN when the source has no coordinates);
  files (N,) unicode, tile paths relative to meta["root"];
  meta () unicode, a JSON object: format/version, the model that made the embeddings
    (backbone, embed_dim, checkpoint path + SHA-256, image sizes) and the tile spacing.
Members are stored, not deflated, so `open_index` memory-maps them in place: looking up one
photo touches the embedding pages once and copies only the top-k rows' names.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4g.errors import UserInputError
from s4g.fileio import save_npz
from s4g.sampling import EARTH_RADIUS_M

INDEX_FORMAT = "s4g-index"
INDEX_VERSION = 1
# rows of the index scored per block while searching (x D floats: 16 MB at D = 1024)
SEARCH_BLOCK = 4096
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # ZIP local file header (APPNOTE 4.3.7)


@dataclass(frozen=True)
class Index:
    """An opened index: memory-mapped arrays (see the module docstring) and its meta dict."""

    path: Path
    embeddings: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    files: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def file_path(self, row: int) -> str:
        """Absolute path of tile `row`."""
        return os.path.join(self.meta["root"], str(self.files[row]))


def checkpoint_identity(path: str | os.PathLike) -> dict[str, Any]:
    """{"path" (absolute), "sha256", "size", "mtime_ns"} of a checkpoint file."""
    from s4g.weights import file_sha256

    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "sha256": file_sha256(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def same_checkpoint(path: str | os.PathLike, recorded: dict[str, Any]) -> bool:
    """Whether `path` holds the bytes recorded by checkpoint_identity (hash skipped when the
    path, size and modification time all match)."""
    path = Path(path).resolve()
    stat = path.stat()
    seen = (recorded.get("path"), recorded.get("size"), recorded.get("mtime_ns"))
    if (str(path), stat.st_size, stat.st_mtime_ns) == seen:
        return True
    from s4g.weights import file_sha256

    return stat.st_size == recorded.get("size") and file_sha256(path) == recorded.get("sha256")


def tile_spacing_m(lat: np.ndarray, lon: np.ndarray) -> float | None:
    """Median distance in metres from a tile to its nearest other tile; None without coordinates."""
    ok = np.isfinite(lat) & np.isfinite(lon)
    if ok.sum() < 2:
        return None
    from s4g.sampling import gps_neighbours

    _, dist = gps_neighbours(lat[ok], lon[ok], 1)
    return float(np.median(dist[:, 0]))


def write_index(
    out: str | os.PathLike,
    embeddings: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    files: Sequence[str],
    root: str | os.PathLike,
    model_meta: dict[str, Any],
    *,
    float16: bool = False,
) -> dict[str, Any]:
    """Write an index file atomically; returns its meta dict.

    embeddings (N, D) float32 L2-normalised; lat, lon (N,) float64 degrees or NaN; files: N
    paths relative to `root`; model_meta: backbone, embed_dim, checkpoint identity, sizes.
    """
    n = embeddings.shape[0]
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.shape != (n,) or lon.shape != (n,) or len(files) != n:
        raise ValueError(f"index: {n} embeddings but {lat.shape} lat, {lon.shape} lon, {len(files)} files")
    meta = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "count": int(n),
        "dtype": "float16" if float16 else "float32",
        "root": str(Path(root).resolve()),
        "has_coordinates": bool(np.isfinite(lat).any()),
        "tile_spacing_m": tile_spacing_m(lat, lon),
        "model": model_meta,
    }
    save_npz(
        out,
        embeddings=np.ascontiguousarray(embeddings, dtype=np.float16 if float16 else np.float32),
        lat=lat,
        lon=lon,
        files=np.array([str(f) for f in files], dtype=str),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    return meta


def _member_memmap(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """Memory-map the .npy member `name` of an uncompressed npz (changes stay in memory)."""
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        raise UserInputError(f"{path}: not an s4g index (no '{name}' array)") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise UserInputError(f"{path}: the '{name}' array is compressed; rebuild the index with s4g index")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        f.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise UserInputError(f"{path}: the '{name}' array holds Python objects (refused)")
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype=dtype)
    # copy-on-write: torch can wrap the pages without a copy; nothing is ever written back
    return np.memmap(path, dtype=dtype, mode="c", shape=shape, order="F" if fortran else "C", offset=offset)


def open_index(path: str | os.PathLike) -> Index:
    """Open an index written by write_index, its arrays memory-mapped.

    Raises UserInputError naming the file when it is missing or not an s4g index.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such index file (make one with s4g index)")
    try:
        with zipfile.ZipFile(path) as zf:
            meta_arr = _member_memmap(path, zf, "meta")
            meta = json.loads(str(np.asarray(meta_arr)[()]))
            if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
                raise UserInputError(f"{path}: not an s4g index (its meta names no '{INDEX_FORMAT}' format)")
            if meta.get("version", 0) > INDEX_VERSION:
                raise UserInputError(f"{path}: index version {meta['version']} is newer than this s4g reads")
            arrays = {name: _member_memmap(path, zf, name) for name in ("embeddings", "lat", "lon", "files")}
    except (zipfile.BadZipFile, ValueError, OSError, struct.error) as err:
        if isinstance(err, UserInputError):
            raise
        raise UserInputError(f"{path}: not a readable s4g index ({err})") from None
    n = arrays["embeddings"].shape[0]
    if arrays["embeddings"].ndim != 2 or any(arrays[a].shape != (n,) for a in ("lat", "lon", "files")):
        raise UserInputError(f"{path}: inconsistent index arrays; rebuild it with s4g index")
    return Index(path=path, meta=meta, **arrays)


def search(index: Index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k tiles of each query embedding by cosine similarity.

    query (Q, D) float32, L2-normalised. Streams the memory-mapped index SEARCH_BLOCK rows at
    a time through s4g.sampling.topk_merge (the blocked top-k mining uses), so extra memory
    is one block however large the index.
    -> (rows (Q, k') int64, scores (Q, k') float32) with k' = min(k, N), best first, equal
       scores by lower row.
    """
    from s4g.sampling import topk_init, topk_merge

    query = np.ascontiguousarray(query, dtype=np.float32)
    if query.ndim != 2 or query.shape[1] != index.embeddings.shape[1]:
        raise UserInputError(
            f"{index.path}: holds {index.embeddings.shape[1]}-d embeddings but the model gives "
            f"{query.shape[-1]}-d ones; the index was made by another model"
        )
    k = max(1, min(int(k), len(index)))
    best_idx, best_val = topk_init(query.shape[0], k)
    none = np.full(query.shape[0], -1, dtype=np.int64)
    q = torch.from_numpy(query)
    for r0 in range(0, len(index), SEARCH_BLOCK):
        rows = index.embeddings[r0 : r0 + SEARCH_BLOCK]
        block = torch.from_numpy(rows if rows.dtype == np.float32 else rows.astype(np.float32))
        scores = (q @ block.T).numpy()
        if not np.isfinite(scores).all():
            raise UserInputError(
                f"{index.path}: rows {r0}..{r0 + len(block) - 1} hold NaN or inf; rebuild the index"
            )
        best_idx, best_val = topk_merge(scores, r0, k, none, best_idx, best_val)
    return best_idx, best_val


def haversine_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


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


_FILE_COLUMNS = ("file", "filename", "name", "path", "image")
_LAT_COLUMNS = ("lat", "latitude")
_LON_COLUMNS = ("lon", "lng", "long", "longitude")


def _column(header: list[str], names: tuple[str, ...], csv_path: Path) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise UserInputError(
        f"{csv_path}: the header {header} names no column {' / '.join(names)} "
        "(expected a header naming the file, lat and lon columns)"
    )


def read_tiles_csv(
    csv_path: str | os.PathLike, images_dir: str | os.PathLike
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(files relative to images_dir, lat (N,) float64, lon (N,) float64) from a CSV.

    The CSV has a header naming a file column (file/filename/name/path/image), lat/latitude
    and lon/lng/longitude; file names are relative to images_dir. A missing image, a bad
    number or an out-of-range coordinate raises UserInputError naming the CSV line.
    """
    import csv

    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not images_dir.is_dir():
        raise UserInputError(f"--images {images_dir}: no such folder")
    if not csv_path.is_file():
        raise UserInputError(f"--coords {csv_path}: no such file")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise UserInputError(f"{csv_path}: expected a header and at least one row")
    cols = [_column(rows[0], names, csv_path) for names in (_FILE_COLUMNS, _LAT_COLUMNS, _LON_COLUMNS)]
    files, lat, lon = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            name, la, lo = row[cols[0]].strip(), float(row[cols[1]]), float(row[cols[2]])
        except (IndexError, ValueError):
            raise UserInputError(f"{csv_path}, line {line}: expected a file name, lat and lon, got {row}") from None
        if not (-90 <= la <= 90 and -180 <= lo <= 180):
            raise UserInputError(f"{csv_path}, line {line}: lat {la}, lon {lo} out of range (degrees)")
        if not (images_dir / name).is_file():
            raise UserInputError(f"{csv_path}, line {line}: image {images_dir / name} does not exist")
        files.append(name)
        lat.append(la)
        lon.append(lo)
    return files, np.array(lat, dtype=np.float64), np.array(lon, dtype=np.float64)


def model_meta(
    model, config: dict[str, Any], checkpoint: str | os.PathLike, reference_kind: str
) -> dict[str, Any]:
    """What identifies the embeddings of an index: backbone, width, checkpoint bytes, sizes."""
    from s4g.embed import view_size

    aerial, ground = int(config["aerial_size"]), [int(v) for v in config["ground_size"]]
    return {
        "backbone": model.backbone,
        "embed_dim": int(model.embed_dim),
        "checkpoint": checkpoint_identity(checkpoint),
        "aerial_size": aerial,
        "ground_size": ground,
        "reference_kind": reference_kind,
        "reference_size": list(view_size(reference_kind, aerial, ground)),
    }


def build_index(
    checkpoint: str | os.PathLike,
    files: Sequence[str],
    lat: np.ndarray,
    lon: np.ndarray,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reference_kind: str = "aerial",
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    float16: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed tiles (paths relative to root) with the checkpoint's model and write the index.

    Tiles are resized to the checkpoint's aerial size (reference_kind "drone": its ground
    size). Returns the index meta dict (see write_index).
    """
    from s4g.embed import embed_files
    from s4g.model import load_checkpoint

    model, config = load_checkpoint(checkpoint)
    meta = model_meta(model, config, checkpoint, reference_kind)
    paths = [os.path.join(root, f) for f in files]
    emb = embed_files(
        model, paths, meta["reference_size"], device=device, batch_size=batch_size,
        workers=workers, progress=progress, label="tiles",
    )
    return write_index(out, emb, lat, lon, files, root, meta, float16=float16)
