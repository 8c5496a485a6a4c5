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

from s4g.checkpoint import load_checkpoint
from s4g.embed import embed_files, view_size
from s4g.errors import UserInputError
from s4g.fileio import file_sha256, npz_kind, save_npz
from s4g.geo import nearest_spacing_m
from s4g.sampling import topk_init, topk_merge
from s4g.scoring import score_blocks

INDEX_FORMAT = "s4g-index"
INDEX_VERSION = 1
# rows of the index scored per block while searching (x D floats: 16 MB at D = 1024)
SEARCH_BLOCK = 4096
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # ZIP local file header (APPNOTE 4.3.7)
#: The kind of file `s4g index --out` writes (s4g.fileio.check_output).
INDEX_FILE = npz_kind("an s4g index", "embeddings", "meta")


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
    return stat.st_size == recorded.get("size") and file_sha256(path) == recorded.get("sha256")


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
        "tile_spacing_m": nearest_spacing_m(lat, lon),
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
    for _, r0, scores in score_blocks(q, index.embeddings, (max(1, query.shape[0]), SEARCH_BLOCK)):
        if not torch.isfinite(scores).all():
            raise UserInputError(
                f"{index.path}: rows {r0}..{r0 + scores.shape[1] - 1} hold NaN or inf; rebuild the index"
            )
        best_idx, best_val = topk_merge(scores.numpy(), r0, k, none, best_idx, best_val)
    return best_idx, best_val


def model_meta(
    model, config: dict[str, Any], checkpoint: str | os.PathLike, reference_kind: str
) -> dict[str, Any]:
    """What identifies the embeddings of an index: backbone, width, checkpoint bytes, sizes."""
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
    model, config = load_checkpoint(checkpoint)
    meta = model_meta(model, config, checkpoint, reference_kind)
    paths = [os.path.join(root, f) for f in files]
    emb = embed_files(
        model, paths, meta["reference_size"], device=device, batch_size=batch_size,
        workers=workers, progress=progress, label="tiles",
    )
    return write_index(out, emb, lat, lon, files, root, meta, float16=float16)
