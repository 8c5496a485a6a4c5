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
from s4g.pipeline.transforms import View


def embed_files(
    model: torch.nn.Module,
    files: Sequence[str],
    view: View,
    kind: str,
    *,
    device: torch.device | str,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    label: str = "embedding",
    env: DistEnv | None = None,
) -> np.ndarray | None:
    """Embeddings of image files, in file order.

    files: N image paths, all of one kind ("panorama", "drone" or "aerial"), fed to the model
    as `view` says for that kind (s4g.pipeline.transforms.View: the size in pixels, and for
    panoramas the field of view cut at a heading; s4g.pipeline.dataset.ImageDataset).
    env: a torchrun process group (s4g.distributed.setup) sharing the work: each rank embeds
      a contiguous run of the whole batches one process would form (distributed.batch_shares,
      so every image is embedded beside the same images as in one process), rank 0 receives
      every row and the other ranks get None. An unreadable image raises its UserInputError
      on every rank. None (or one process): all images here.
    -> (N, D) float32 numpy array, rows L2-normalised (D = model.embed_dim).
    The model is moved to `device` and put in eval mode.
    """
    device = torch.device(device)
    dataset = ImageDataset(list(files), view, kind)
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


def embed_eval_set(
    model: torch.nn.Module,
    eval_set: EvalSet,
    view: View,
    *,
    device: torch.device | str,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    env: DistEnv | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(query (Q, D), reference (R, D)) float32 embeddings of an EvalSet.

    Each side is embedded as `view` says for its kind (embed_files): only panorama queries
    are cut to the field of view. env: share the work over a process group (embed_files);
    ranks other than 0 get (None, None).
    """
    common: dict[str, Any] = dict(device=device, batch_size=batch_size, workers=workers, progress=progress, env=env)
    q = embed_files(model, eval_set.query_files, view, eval_set.query_kind, label="queries", **common)
    r = embed_files(model, eval_set.reference_files, view, eval_set.reference_kind, label="references", **common)
    return q, r


__all__ = ["embed_eval_set", "embed_files"]
