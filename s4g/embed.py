"""Images → embeddings with a model (used by eval, mine, training-time evaluation, index).

Inference runs under torch.inference_mode, channels-last, in the runtime's autocast (bf16 on
GPUs that have it) and in float32 on the CPU; embeddings come back as one float32 numpy
array in file order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from s4g import runtime
from s4g.data.dataset import ImageDataset
from s4g.data.records import EvalSet
from s4g.data.transforms import fov_size
from s4g.errors import UserInputError


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
) -> np.ndarray:
    """Embeddings of image files, in file order.

    files: N image paths. size_hw: (H, W) pixels each image is resized to.
    fov: horizontal field of view in degrees cut from each panorama (None = all of it),
      centred at heading_deg (default north), or at a heading drawn per image from (seed,
      index) when random_heading (s4g.data.dataset.ImageDataset).
    -> (N, D) float32 numpy array, rows L2-normalised (D = model.embed_dim).
    The model is moved to `device` and put in eval mode.
    """
    device = torch.device(device)
    h, w = (int(v) for v in size_hw)
    dataset = ImageDataset(
        list(files), (h, w), fov=fov, heading_deg=heading_deg, random_heading=random_heading, seed=seed
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    model = model.to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    out = None
    with runtime.progress(enabled=progress) as bar, torch.inference_mode(), runtime.autocast(device):
        task = bar.add_task(f"{label} {len(files)} images at {h}×{w}", total=len(files))
        for images, index in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            try:
                emb = model(images).float().cpu().numpy()
            except RuntimeError as err:  # e.g. images smaller than the backbone's stride
                raise UserInputError(
                    f"{label}: the model failed on a batch of {len(index)} images of {h}×{w} "
                    f"(check the image sizes and --batch-size): {err}"
                ) from err
            if out is None:
                out = np.empty((len(files), emb.shape[1]), dtype=np.float32)
            out[index.numpy()] = emb
            bar.advance(task, len(index))
    if out is None:
        raise UserInputError(f"{label}: no image files to embed")
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
) -> tuple[np.ndarray, np.ndarray]:
    """(query (Q, D), reference (R, D)) float32 embeddings of an EvalSet.

    Sizes follow each side's kind (view_size). The field-of-view options (see embed_files)
    apply to panorama queries only.
    """
    common = dict(device=device, batch_size=batch_size, workers=workers, progress=progress)
    view = {}
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
