"""Images → embeddings with a trained model (used by eval, mine, training-time eval, index).

Inference runs under torch.inference_mode, channels-last, with bf16 autocast on a GPU that
supports it (fp16 otherwise) and plain float32 on the CPU; the embeddings come back as one
float32 numpy array in file order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from s4g.data.records import EvalSet
from s4g.errors import UserInputError


def pick_device(name: str | None = None) -> torch.device:
    """torch.device(name), or cuda when available else cpu; UserInputError for a bad name."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise UserInputError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1): {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
    return dev


def _autocast(device: torch.device):
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


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
    from s4g.data.dataset import ImageDataset  # the loaders' module; imported on use

    if batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}")
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
    with _progress(progress) as bar, torch.inference_mode(), _autocast(device):
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


def _progress(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),  # no bar residue in logs and pipes
        transient=True,
    )


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
    from s4g.data.transforms import fov_size

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


_RUN_NAME = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


def latest_checkpoint(runs_dir: str | Path = "runs") -> Path:
    """best.pt of the most recent run under runs_dir (runs/<dataset>-<YYYYmmdd-HHMMSS>[-n]/).

    Newest by the time stamp in the folder name (then its -n suffix, then mtime); folders
    named otherwise rank by mtime alone, after stamped ones. UserInputError if none has best.pt.
    """
    runs = Path(runs_dir)
    found = []
    for run in runs.iterdir() if runs.is_dir() else ():
        if (run / "best.pt").is_file():
            m = _RUN_NAME.search(run.name)
            key = (m.group(1), int(m.group(2) or 0)) if m else ("", 0)
            found.append((key, (run / "best.pt").stat().st_mtime, run / "best.pt"))
    if not found:
        raise UserInputError(
            f"no --checkpoint given and no run with best.pt under {runs.resolve()}; pass "
            "--checkpoint CKPT or run `s4g train` first"
        )
    return max(found)[2]


@dataclass(frozen=True)
class InferenceSettings:
    """What eval/mine read, from the command line first and the checkpoint's config second.

    dataset: the name the run used (e.g. "synthetic"); loader: the name load_train/load_eval
    take; split None = the preset's eval split; sizes in pixels, ground_size (H, W).
    """

    dataset: str
    loader: str
    data_root: str
    split_dir: str
    split: str | None
    aerial_size: int
    ground_size: tuple[int, int]
    batch_size: int
    workers: int
    fov: float | None
    random_heading: bool


def _loader_name(dataset: str) -> str:
    # the synthetic world is written in CVUSA's layout (s4g.train_data.SYNTH_LAYOUT)
    return "cvusa" if dataset == "synthetic" else dataset


def inference_settings(config: Mapping[str, Any], source: str, **given: Any) -> InferenceSettings:
    """Merge command-line values (`given`, None = not given) over a checkpoint's config.

    With a --dataset other than the checkpoint's, the image sizes and split come from that
    dataset's preset and --data-root is required. UserInputError names what is missing.
    """
    from s4g.config import preset_for

    given = {k: v for k, v in given.items() if v is not None}
    dataset = given.get("dataset", config.get("dataset"))
    if dataset is None:
        raise UserInputError(f"{source} names no dataset in its config; pass --dataset NAME")
    base = dict(config)
    if dataset != config.get("dataset"):
        preset = preset_for(_loader_name(dataset))
        base = {"aerial_size": preset.aerial_size, "ground_size": preset.ground_size,
                "eval_split": preset.eval_split, "batch_size": config.get("batch_size", 64)}
    merged = {**base, **given}
    if merged.get("data_root") is None:
        raise UserInputError(f"{source} names no data root for {dataset!r}; pass --data-root DIR")
    for key in ("aerial_size", "ground_size"):
        if key not in merged:
            raise UserInputError(f"{source}: its config has no {key!r}; it is not an s4g training checkpoint")
    split = merged.get("split", merged.get("eval_split"))
    if dataset == "synthetic" and split is None:
        split = "test"
    return InferenceSettings(
        dataset=dataset,
        loader=_loader_name(dataset),
        data_root=str(merged["data_root"]),
        split_dir=str(merged.get("split_dir", "splits")),
        split=split,
        aerial_size=int(merged["aerial_size"]),
        ground_size=tuple(int(v) for v in merged["ground_size"]),
        # an inference batch: --batch-size, else the run's eval batch, else its train batch
        batch_size=int(given.get("batch_size", merged.get("eval_batch_size", merged.get("batch_size", 64)))),
        workers=int(merged.get("workers", 0)),
        fov=merged.get("fov"),
        random_heading=bool(merged.get("random_heading", False)),
    )


__all__ = [
    "InferenceSettings",
    "embed_eval_set",
    "embed_files",
    "inference_settings",
    "latest_checkpoint",
    "pick_device",
    "view_size",
]
