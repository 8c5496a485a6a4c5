"""A geo-tagged index of aerial tiles, and single-photo search against it.

An index is a pair of files with one name: NAME.npy and NAME.json (`--out` and `--index` take
NAME, NAME.json or NAME.npy).
  NAME.npy: the embeddings (N, D) float32 or float16, rows L2-normalised, a plain .npy that
    `np.load(mmap_mode="r")` memory-maps: looking up one photo reads the pages once.
  NAME.json: format/version, the SHA-256 of NAME.npy, its shape and dtype, the tiles' paths
    relative to "root" ("files"), their "lat"/"lon" in degrees (null without coordinates),
    the model that made the embeddings (backbone, embed_dim, checkpoint path + SHA-256, image
    sizes) and the tile spacing.
open_index recomputes the SHA-256 of NAME.npy and refuses a file that changed since the
index was written (a flipped byte, a sign-flipped row, a half-written rebuild), since any
such change silently moves `s4g locate`'s answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4g.errors import UserInputError
from s4g.fileio import OutputKind, atomic_path, file_sha256, json_kind, marked, save_json
from s4g.geo import nearest_spacing_m
from s4g.model.checkpoint import load_checkpoint
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_files
from s4g.retrieval.scoring import score_blocks
from s4g.sampling import topk_init, topk_merge

INDEX_FORMAT = "s4g-index"
INDEX_VERSION = 2
# rows of the index scored per block while searching (x D floats: 16 MB at D = 1024)
SEARCH_BLOCK = 4096
#: The kinds of the two files `s4g index --out` writes (s4g.fileio.check_output).
INDEX_FILE = json_kind("an s4g index", "format", "embeddings_sha256")


def _is_index_npy(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(6) == b"\x93NUMPY" and index_paths(path)[0].is_file()


INDEX_EMBEDDINGS = OutputKind("an s4g index's embeddings (.npy)", _is_index_npy)


def index_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(NAME.json, NAME.npy) of the index named by `path` (NAME, NAME.json or NAME.npy)."""
    path = Path(path)
    if path.suffix in (".json", ".npy"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".npy")


@dataclass(frozen=True)
class Index:
    """An opened index (see the module docstring): path = NAME.json; embeddings memory-mapped
    read-only from NAME.npy; lat, lon (N,) float64 degrees (NaN: unknown); files (N,) str;
    meta: the JSON's other entries."""

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
    """Write the index NAME.npy + NAME.json (`out` names them, see index_paths); returns
    the JSON's dict.

    embeddings (N, D) float32 L2-normalised; lat, lon (N,) float64 degrees or NaN; files: N
    paths relative to `root`; model_meta: backbone, embed_dim, checkpoint identity, sizes.
    Each file is written under a temporary name and renamed; the .json goes last and holds
    the .npy's SHA-256, so an interrupted rebuild is refused on opening, not misread.
    """
    n = embeddings.shape[0]
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.shape != (n,) or lon.shape != (n,) or len(files) != n:
        raise ValueError(f"index: {n} embeddings but {lat.shape} lat, {lon.shape} lon, {len(files)} files")
    meta_path, npy_path = index_paths(out)
    emb = np.ascontiguousarray(embeddings, dtype=np.float16 if float16 else np.float32)
    with atomic_path(npy_path, suffix=".npy") as tmp:
        np.save(tmp, emb, allow_pickle=False)
        digest = file_sha256(tmp)
    meta = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "count": int(n),
        "dtype": emb.dtype.name,
        "embeddings": npy_path.name,
        "embeddings_sha256": digest,
        "embeddings_shape": list(emb.shape),
        "root": str(Path(root).resolve()),
        "has_coordinates": bool(np.isfinite(lat).any()),
        "tile_spacing_m": nearest_spacing_m(lat, lon),
        "model": model_meta,
    }
    save_json(meta_path, marked({  # the mark lets `s4g index --overwrite` replace it
        **meta,
        "files": [str(f) for f in files],
        # NaN is not JSON: a tile without coordinates has null
        "lat": [float(v) if np.isfinite(v) else None for v in lat],
        "lon": [float(v) if np.isfinite(v) else None for v in lon],
    }))
    return meta


def _degrees(values, path: Path, name: str, n: int) -> np.ndarray:
    if not isinstance(values, list) or len(values) != n:
        raise UserInputError(f"{path}: '{name}' is not a list of {n} values; rebuild the index with s4g index")
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserInputError(f"{path}: '{name}' holds a value that is not a number; rebuild the index") from None


def open_index(path: str | os.PathLike) -> Index:
    """Open an index written by write_index, its embeddings memory-mapped (read-only).

    path: NAME, NAME.json or NAME.npy. Raises UserInputError naming the file when either
    file is missing, is not an s4g index, or the .npy does not hold the bytes the index
    recorded.
    """
    meta_path, npy_path = index_paths(path)
    if not meta_path.is_file():
        raise UserInputError(f"{meta_path}: no such index file (make one with s4g index)")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserInputError(f"{meta_path}: not a readable s4g index ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        raise UserInputError(f"{meta_path}: not an s4g index (it names no '{INDEX_FORMAT}' format)")
    if not isinstance(doc.get("version"), int) or doc["version"] > INDEX_VERSION:
        raise UserInputError(f"{meta_path}: index version {doc.get('version')!r} is not one this s4g reads")
    if doc["version"] < INDEX_VERSION:
        raise UserInputError(f"{meta_path}: an index of an older format; rebuild it with s4g index")
    if not npy_path.is_file():
        raise UserInputError(f"{npy_path}: the embeddings of the index {meta_path} are missing; rebuild it")
    if file_sha256(npy_path) != doc.get("embeddings_sha256"):
        raise UserInputError(
            f"{npy_path}: the embeddings changed since the index {meta_path} was written (their "
            "SHA-256 differs from the one it recorded); rebuild the index with s4g index"
        )
    try:
        emb = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserInputError(f"{npy_path}: not a readable .npy file ({err})") from None
    if emb.ndim != 2 or list(emb.shape) != doc.get("embeddings_shape") or emb.dtype.name not in ("float32", "float16"):
        raise UserInputError(f"{npy_path}: holds {emb.dtype} {emb.shape}, not what {meta_path} recorded; rebuild it")
    n = emb.shape[0]
    files = doc.get("files")
    if not isinstance(files, list) or len(files) != n or not all(isinstance(f, str) for f in files):
        raise UserInputError(f"{meta_path}: 'files' is not a list of {n} paths; rebuild the index with s4g index")
    meta = {k: v for k, v in doc.items() if k not in ("files", "lat", "lon")}
    return Index(path=meta_path, embeddings=emb, lat=_degrees(doc.get("lat"), meta_path, "lat", n),
                 lon=_degrees(doc.get("lon"), meta_path, "lon", n), files=np.array(files, dtype=str), meta=meta)


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
    view = View(config["aerial_size"], config["ground_size"])
    return {
        "backbone": model.backbone,
        "embed_dim": int(model.embed_dim),
        "checkpoint": checkpoint_identity(checkpoint),
        "aerial_size": view.aerial_size,
        "ground_size": list(view.ground_size),
        "reference_kind": reference_kind,
        "reference_size": list(view.size(reference_kind)),
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
    """Embed tiles (paths relative to root) with the checkpoint's model and write the index
    `out` (NAME.npy + NAME.json, see index_paths).

    Tiles are resized to the checkpoint's aerial size (reference_kind "drone": its ground
    size). Returns the index meta dict (see write_index).
    """
    model, config = load_checkpoint(checkpoint)
    meta = model_meta(model, config, checkpoint, reference_kind)
    paths = [os.path.join(root, f) for f in files]
    emb = embed_files(
        model, paths, View(meta["aerial_size"], meta["ground_size"]), reference_kind, device=device,
        batch_size=batch_size, workers=workers, progress=progress, label="tiles",
    )
    assert emb is not None  # None only on the ranks other than 0 of a process group
    return write_index(out, emb, lat, lon, files, root, meta, float16=float16)
