"""Images → embeddings with a model (used by eval, mine, training-time evaluation, index).

Inference runs under torch.inference_mode, channels-last, in the runtime's autocast (bf16 on
GPUs that have it) and in float32 on the CPU; embeddings come back as one float32 numpy
array in file order. Under torchrun (an `env`), the ranks share the images and rank 0
receives the rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from s4g import runtime
from s4g.data.records import EvalSet
from s4g.distributed import DistEnv, batch_shares, exchange, gather_rows
from s4g.errors import UserInputError
from s4g.flags import Flag
from s4g.pipeline.augment import normalise
from s4g.pipeline.dataset import ImageDataset
from s4g.pipeline.transforms import fov_size


def embed_files(
    model: torch.nn.Module,
    files: Sequence[str],
    size_hw: Sequence[int],
    *,
    device: torch.device | str,
    batch_size: int = 64,
    workers: int = 0,
    fov: float | None = None,
    heading_deg: float | None = None,
    random_heading: bool = False,
    seed: int = 0,
    progress: bool = True,
    label: str = "embedding",
    env: DistEnv | None = None,
) -> np.ndarray | None:
    """Embeddings of image files, in file order.

    files: N image paths. size_hw: (H, W) pixels each image is resized to.
    fov: horizontal field of view in degrees cut from each panorama (None = all of it),
      centred at heading_deg (default north), or at a heading drawn per image from (seed,
      index) when random_heading (s4g.pipeline.dataset.ImageDataset).
    env: a torchrun process group (s4g.distributed.setup) sharing the work: each rank embeds
      a contiguous run of the whole batches one process would form (distributed.batch_shares,
      so every image is embedded beside the same images as in one process), rank 0 receives
      every row and the other ranks get None. An unreadable image raises its UserInputError
      on every rank. None (or one process): all images here.
    -> (N, D) float32 numpy array, rows L2-normalised (D = model.embed_dim).
    The model is moved to `device` and put in eval mode.
    """
    device = torch.device(device)
    h, w = (int(v) for v in size_hw)
    dataset = ImageDataset(
        list(files), (h, w), fov=fov, heading_deg=heading_deg, random_heading=random_heading, seed=seed
    )
    if not len(dataset):  # before any collective: every rank stops here alike
        raise UserInputError(f"{label}: no image files to embed")
    model = model.to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    if env is None or not env.distributed:
        return _embed_rows(model, dataset, range(len(dataset)), device, batch_size, workers, progress, label)
    shares = batch_shares(len(dataset), batch_size, env.world_size)
    rows, failure = None, None
    # A DataLoader draws its base seed from the CPU RNG. Rank 0 draws as one process does; the
    # other ranks keep their RNG where it was, so training draws are those of rank-0-only runs.
    keep_rng = contextlib.nullcontext() if env.is_main else torch.random.fork_rng(devices=[])
    try:
        with keep_rng:
            rows = _embed_rows(model, dataset, shares[env.rank], device, batch_size, workers,
                               progress and env.is_main, label)
    except Exception as err:  # noqa: BLE001 - re-raised on every rank by exchange(), so none waits in the gather
        failure = err
    dims = exchange(env, None if rows is None else rows.shape[1], failure)
    return gather_rows(env, rows, [len(s) for s in shares], max(d for d in dims if d is not None))


def _embed_rows(model: torch.nn.Module, dataset: ImageDataset, rows: range, device: torch.device,
                batch_size: int, workers: int, progress: bool, label: str) -> np.ndarray | None:
    """(len(rows), D) float32 embeddings of dataset items rows (a contiguous range); None if empty."""
    loader = DataLoader(
        dataset if len(rows) == len(dataset) else Subset(dataset, rows),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    h, w = dataset.size_hw
    here = "" if len(rows) == len(dataset) else f", {len(rows)} in this process"
    out = None
    with runtime.progress(enabled=progress) as bar, torch.inference_mode(), runtime.autocast(device):
        task = bar.add_task(f"{label} {len(dataset)} images at {h}×{w}{here}", total=len(rows))
        for images, index in loader:
            # uint8 over the bus (4x fewer bytes), normalised on the device
            images = normalise(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            try:
                emb = model(images).float().cpu().numpy()
            except torch.OutOfMemoryError:
                raise UserInputError(
                    f"{label}: the GPU ran out of memory embedding {len(index)} images of {h}×{w} at once; "
                    f"embed fewer at a time ({Flag.BATCH_SIZE} of s4g eval / mine / index, {Flag.EVAL_BATCH_SIZE} of "
                    "s4g train)"
                ) from None
            except RuntimeError as err:  # e.g. images smaller than the backbone's stride
                raise UserInputError(
                    f"{label}: the model failed on a batch of {len(index)} images of {h}×{w} "
                    f"(check the image sizes and {Flag.BATCH_SIZE}): {err}"
                ) from err
            if out is None:
                out = np.empty((len(rows), emb.shape[1]), dtype=np.float32)
            out[index.numpy() - rows.start] = emb
            bar.advance(task, len(index))
    return out


def view_size(kind: str, aerial_size: int, ground_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) fed to the model for one kind of image.

    "panorama" and "drone" are the ground view: ground_size (H, W), as in training (square
    for University-1652's presets); "aerial" is a square aerial_size × aerial_size tile.
    """
    if kind in ("panorama", "drone"):
        h, w = ground_size
        return int(h), int(w)
    if kind == "aerial":
        return int(aerial_size), int(aerial_size)
    raise ValueError(f"unknown image kind {kind!r}; expected panorama, drone or aerial")


def embed_eval_set(
    model: torch.nn.Module,
    eval_set: EvalSet,
    aerial_size: int,
    ground_size: Sequence[int],
    *,
    device: torch.device | str,
    batch_size: int = 64,
    workers: int = 0,
    fov: float | None = None,
    heading_deg: float | None = None,
    random_heading: bool = False,
    seed: int = 0,
    progress: bool = True,
    env: DistEnv | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(query (Q, D), reference (R, D)) float32 embeddings of an EvalSet.

    Sizes follow each side's kind (view_size). The field-of-view options (see embed_files)
    apply to panorama queries only. env: share the work over a process group (embed_files);
    ranks other than 0 get (None, None).
    """
    common: dict[str, Any] = dict(device=device, batch_size=batch_size, workers=workers, progress=progress, env=env)
    view: dict[str, Any] = {}
    if eval_set.query_kind == "panorama" and (fov is not None or random_heading):
        view = dict(fov=fov, heading_deg=heading_deg, random_heading=random_heading, seed=seed)
    q = embed_files(
        model,
        eval_set.query_files,
        # a limited view keeps the panorama's scale: (H, W * fov / 360), never stretched
        fov_size(view_size(eval_set.query_kind, aerial_size, ground_size), view.get("fov")),
        label="queries",
        **view,
        **common,
    )
    r = embed_files(
        model,
        eval_set.reference_files,
        view_size(eval_set.reference_kind, aerial_size, ground_size),
        label="references",
        **common,
    )
    return q, r


__all__ = ["embed_eval_set", "embed_files", "view_size"]
