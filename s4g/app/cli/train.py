"""`s4g train`: one training run from a dataset's preset and the options that change it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from s4g.app.cli.app import command, console, require_paths
from s4g.app.cli.options import (
    BACKBONES,
    DATASET_HELP,
    DatasetName,
    GroundSize,
    Head,
    Lists,
    PretrainedFrom,
    backbone_option,
    chunk_size_option,
    ground_size_option,
    head_option,
    lists_option,
    pretrained_from_option,
    sampling_option,
    value,
)
from s4g.config import Sampling, TrainConfig
from s4g.data import registry as datasets
from s4g.errors import UserInputError
from s4g.flags import Flag

_PRESET = "default: the dataset's preset"


def _preset(what: str, field: str) -> str:
    """`what`, then each dataset's preset value of `field`, datasets of one value together."""
    by_value: dict[str, list[str]] = {}
    for name, spec in datasets.DATASETS.items():
        value = getattr(spec.preset, field, None)
        if isinstance(value, (tuple, list)):
            shown = " ".join(map(str, value))
        else:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
        by_value.setdefault(shown, []).append(name)
    values = "; ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())
    return f"{what} Default: the dataset's preset: {values}."


@command("train")
def train_cmd(
    dataset: Annotated[DatasetName | None, typer.Option(
        Flag.DATASET, help=f"{DATASET_HELP}. Optional with {Flag.RESUME}.")] = None,
    data_root: Annotated[Path | None, typer.Option(
        Flag.DATA_ROOT,
        help="Dataset root (synthetic: where to write/reuse the world; default a cache folder).")] = None,
    out: Annotated[Path | None, typer.Option(
        Flag.OUT,
        help=f"Run directory (default runs/<dataset>-<YYYYmmdd-HHMMSS>/); one that holds a run needs {Flag.RESUME} or "
             f"{Flag.OVERWRITE}.")] = None,
    resume: Annotated[Path | None, typer.Option(
        Flag.RESUME, help="Continue from a run directory or checkpoint of the same configuration.")] = None,
    overwrite: Annotated[bool, typer.Option(
        Flag.OVERWRITE,
        help=f"Start a new run in an {Flag.OUT} that holds one; its files are moved into "
             "replaced-<time>/, not deleted.")] = False,
    backbone: Annotated[str | None, backbone_option(_preset(
        f"Encoder: {', '.join(BACKBONES)}, or timm/<model name> (docs/backbones.md).", "backbone"))] = None,
    pretrained: Annotated[bool | None, typer.Option(
        f"{Flag.PRETRAINED}/{Flag.NO_PRETRAINED}", help=f"Start from downloaded ImageNet weights ({_PRESET}).")] = None,
    pretrained_from: Annotated[PretrainedFrom | None, pretrained_from_option()] = None,
    weights: Annotated[Path | None, typer.Option(
        Flag.WEIGHTS,
        help="Local weights to start from instead of downloading: torchvision's or timm's layout, .safetensors or "
             ".pth.")] = None,
    epochs: Annotated[int | None, typer.Option(Flag.EPOCHS, help=_preset("Training epochs.", "epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(
        Flag.BATCH_SIZE, help=f"Pairs per global batch, over all processes ({_PRESET}).")] = None,
    lr: Annotated[float | None, typer.Option(
        Flag.LR, help=_preset("Peak learning rate (AdamW), reached after the warm-up.", "lr"))] = None,
    weight_decay: Annotated[float | None, typer.Option(
        Flag.WEIGHT_DECAY, help=_preset("AdamW weight decay.", "weight_decay"))] = None,
    warmup_epochs: Annotated[float | None, typer.Option(
        Flag.WARMUP_EPOCHS,
        help=_preset("Epochs of linear learning-rate warm-up (may be fractional).", "warmup_epochs"))] = None,
    sampling: Annotated[Sampling | None, sampling_option(_PRESET)] = None,
    neighbour_select: Annotated[int | None, typer.Option(
        Flag.NEIGHBOUR_SELECT, help=f"Neighbours added per anchor ({_PRESET}).")] = None,
    neighbour_range: Annotated[int | None, typer.Option(
        Flag.NEIGHBOUR_RANGE, help=f"Mined neighbours per class for DSS ({_PRESET}).")] = None,
    max_failed_pops: Annotated[int | None, typer.Option(
        Flag.MAX_FAILED_POPS,
        help=f"Packing gives up after this many pops in a row that add no pair ({_PRESET}: 1024, University-1652 "
             f"512).")] = None,
    gps_k: Annotated[int | None, typer.Option(Flag.GPS_K, help=f"GPS neighbours per class ({_PRESET}).")] = None,
    lists: Annotated[Lists | None, lists_option()] = None,
    eval_every: Annotated[int | None, typer.Option(
        Flag.EVAL_EVERY, help=f"Evaluate (and re-mine) every N epochs ({_PRESET}).")] = None,
    aerial_size: Annotated[int | None, typer.Option(
        Flag.AERIAL_SIZE,
        help=_preset("Side of the square aerial tile fed to the model, pixels.", "aerial_size"))] = None,
    ground_size: Annotated[GroundSize, ground_size_option(_preset("", "ground_size").strip())] = None,
    split_dir: Annotated[str | None, typer.Option(Flag.SPLIT_DIR, help="Split folder name (default splits).")] = None,
    eval_split: Annotated[str | None, typer.Option(
        Flag.EVAL_SPLIT,
        help=_preset(f"Split evaluated after epoch 0 and every {Flag.EVAL_EVERY} epochs.", "eval_split"))] = None,
    seed: Annotated[int | None, typer.Option(Flag.SEED, help="Random seed (default 0).")] = None,
    workers: Annotated[int | None, typer.Option(
        Flag.WORKERS,
        help="Data-loader worker processes (default: the preset's 4, or 0 for synthetic, at most the usable "
             "CPUs).")] = None,
    device: Annotated[str | None, typer.Option(Flag.DEVICE, help="auto, cpu, cuda or cuda:N (default auto).")] = None,
    eval_batch_size: Annotated[int | None, typer.Option(
        Flag.EVAL_BATCH_SIZE, help="Images per evaluation batch.")] = None,
    fov: Annotated[float | None, typer.Option(
        Flag.FOV, help="Crop training panoramas to this field of view, degrees.")] = None,
    random_heading: Annotated[bool, typer.Option(
        Flag.RANDOM_HEADING, help=f"With {Flag.FOV}: random heading per sample.")] = False,
    skip_bad_images: Annotated[bool, typer.Option(
        Flag.SKIP_BAD_IMAGES, help="Skip unreadable training images instead of stopping.")] = False,
    check_images: Annotated[bool | None, typer.Option(
        f"{Flag.CHECK_IMAGES}/{Flag.NO_CHECK_IMAGES}",
        help="Read every training image's header before the first evaluation (default: check).")] = None,
    log_every: Annotated[int | None, typer.Option(Flag.LOG_EVERY, help="Log the loss every N steps.")] = None,
    augment: Annotated[bool | None, typer.Option(
        f"{Flag.AUGMENT}/{Flag.NO_AUGMENT}", help=f"Paired geometric + photometric augmentation ({_PRESET}).")] = None,
    locations: Annotated[int | None, typer.Option(
        Flag.LOCATIONS, help="Synthetic world size (synthetic only).")] = None,
    chunk_size: Annotated[Any, chunk_size_option()] = None,  # Optional[ChunkSize]: typer takes no Union
    head: Annotated[Head | None, head_option()] = None,
    head_arg: Annotated[list[str] | None, typer.Option(
        Flag.HEAD_ARG, metavar="KEY=VALUE",
        help="A head setting other than the paper's default, e.g. num_clusters=32 (repeatable).")] = None,
    backbone_arg: Annotated[list[str] | None, typer.Option(
        Flag.BACKBONE_ARG, metavar="KEY=VALUE",
        help="A timm.create_model keyword for a timm/<name> backbone, e.g. depth=6 (repeatable).")] = None,
    train_blocks: Annotated[int | None, typer.Option(
        Flag.TRAIN_BLOCKS,
        help="Train only the last N transformer blocks / ConvNeXt stages (and the head); default all.")] = None,
    lora_rank: Annotated[int | None, typer.Option(
        Flag.LORA_RANK,
        help="LoRA of this rank on the attention projections; the rest of the backbone is frozen (default 0: "
             "off).")] = None,
    backbone_lr_scale: Annotated[float | None, typer.Option(
        Flag.BACKBONE_LR_SCALE, help="The backbone's learning rate as a multiple of the head's (default 1).")] = None,
) -> None:
    """Train a model (multi-GPU: torchrun --nproc-per-node N $(which s4g) train ...)."""
    name = value(dataset)
    require_paths((Flag.RESUME, resume, "run folder or checkpoint"), (Flag.WEIGHTS, weights))
    from s4g.app.jobs.train import ResumePoint, run

    overrides = dict(
        data_root=None if data_root is None else str(data_root), out=None if out is None else str(out),
        backbone=backbone, pretrained=pretrained, pretrained_from=value(pretrained_from),
        weights=None if weights is None else str(weights),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, sampling=value(sampling), neighbour_select=neighbour_select,
        neighbour_range=neighbour_range, max_failed_pops=max_failed_pops, gps_k=gps_k, eval_every=eval_every,
        aerial_size=aerial_size,
        ground_size=ground_size, split_dir=split_dir, eval_split=eval_split, seed=seed, workers=workers,
        device=device, eval_batch_size=eval_batch_size, fov=fov, random_heading=random_heading or None,
        skip_bad_images=skip_bad_images or None, check_images=check_images, log_every=log_every, augment=augment,
        synth_locations=locations, chunk_size=chunk_size, lists=value(lists), head=value(head),
        head_args=key_values(head_arg, Flag.HEAD_ARG), backbone_args=key_values(backbone_arg, Flag.BACKBONE_ARG),
        train_blocks=train_blocks, lora_rank=lora_rank, backbone_lr_scale=backbone_lr_scale,
    )
    point = ResumePoint.read(resume) if resume is not None else None
    if name is not None:
        cfg = datasets.train_config(name, **overrides)
    elif point is not None:  # continue the saved run's configuration
        cfg = TrainConfig.from_dict({**point.checkpoint.get("config", {}), "out": None}, **overrides)
    else:
        raise UserInputError(f"{Flag.DATASET} is required (unless {Flag.RESUME} names a run to continue)")
    run_dir = run(cfg, resume=point, overwrite=overwrite, console=console)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        console.print(f"run directory: {run_dir}")


def key_values(items: list[str] | None, option: str) -> dict | None:
    """{KEY: VALUE} from repeated KEY=VALUE options; a VALUE that reads as JSON (6, 0.3, true)
    takes that type, anything else stays text. None when the option is not given."""
    if not items:
        return None
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(text)
        except ValueError:
            out[key.strip()] = text
    return out
