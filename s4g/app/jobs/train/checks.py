"""Every rule a training configuration must satisfy, checked in one pass before any heavy
work; each failure is a UserInputError naming the option as it is spelled on the command line."""

from __future__ import annotations

import math

from s4g.app.synth.cache import LAYOUT
from s4g.app.synth.writer import MIN_LOCATIONS
from s4g.config import SAMPLINGS, Sampling, TrainConfig
from s4g.data.registry import DatasetSpec
from s4g.errors import UserInputError, check_seed
from s4g.model.encoder import check_backbone, uses_batch_statistics
from s4g.model.heads import HEADS
from s4g.model.weights import PRETRAINED_FROM
from s4g.pipeline.transforms import check_fov
from s4g.retrieval.released import check_lists

# Far beyond any benchmark's images (CVACT's 1664-px panoramas); a larger side is a typo.
MAX_IMAGE_SIDE = 4096


def check_image_sizes(aerial_size: int | None, ground_size: tuple[int, ...] | list[int] | None) -> None:
    """UserInputError unless the sizes given (None: not given) are 1 to MAX_IMAGE_SIDE pixels,
    ground_size as two sizes H W."""
    if aerial_size is not None and not 1 <= aerial_size <= MAX_IMAGE_SIDE:
        raise UserInputError(f"--aerial-size must be from 1 to {MAX_IMAGE_SIDE} pixels, got {aerial_size}")
    if ground_size is not None and (len(ground_size) != 2 or not all(1 <= v <= MAX_IMAGE_SIDE for v in ground_size)):
        raise UserInputError(f"--ground-size: expected two sizes H W from 1 to {MAX_IMAGE_SIDE} pixels, got "
                             f"{' '.join(map(str, ground_size))}")


def check_config(cfg: TrainConfig, spec: DatasetSpec, world_size: int) -> None:
    """The rules that need no data: option values, the dataset's capabilities, the process count."""
    check_backbone(cfg.backbone)
    if cfg.head not in HEADS:
        raise UserInputError(f"--head {cfg.head!r}: choose one of {', '.join(HEADS)}")
    if cfg.lora_rank < 0 or (cfg.train_blocks is not None and cfg.train_blocks < 0):
        raise UserInputError("--lora-rank and --train-blocks must be 0 or more")
    if not (math.isfinite(cfg.backbone_lr_scale) and cfg.backbone_lr_scale >= 0):
        raise UserInputError(f"--backbone-lr-scale must be a finite number >= 0, got {cfg.backbone_lr_scale}")
    if cfg.train_blocks is not None and uses_batch_statistics(cfg.backbone, cfg.backbone_args):
        raise UserInputError(f"--train-blocks with --backbone {cfg.backbone}: its frozen BatchNorm layers would "
                             "still update their running statistics; use a convnext_* or ViT backbone")
    if cfg.pretrained_from not in PRETRAINED_FROM:
        raise UserInputError(f"--pretrained-from {cfg.pretrained_from!r}: choose one of {', '.join(PRETRAINED_FROM)}")
    check_lists(cfg.lists)
    if cfg.sampling not in SAMPLINGS:
        raise UserInputError(f"--sampling {cfg.sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    at_least_one = {"--epochs": cfg.epochs, "--batch-size": cfg.batch_size, "--log-every": cfg.log_every,
                    "--eval-every": cfg.eval_every,
                    "--eval-batch-size": cfg.eval_batch_size, "--gps-k": cfg.gps_k,
                    "--neighbour-range": cfg.neighbour_range, "--neighbour-select": cfg.neighbour_select,
                    "--max-failed-pops": cfg.max_failed_pops}
    for name, value in at_least_one.items():
        if value < 1:
            raise UserInputError(f"{name} must be at least 1, got {value}")
    check_seed("--seed", cfg.seed)
    check_seed("the synthetic world's seed (synth_seed)", cfg.synth_seed)
    check_image_sizes(cfg.aerial_size, cfg.ground_size)
    if cfg.dataset == "synthetic" and cfg.synth_locations < MIN_LOCATIONS[LAYOUT]:
        raise UserInputError(f"--locations must be at least {MIN_LOCATIONS[LAYOUT]}, got {cfg.synth_locations}")
    if cfg.batch_size < 2:
        raise UserInputError(f"--batch-size must be at least 2 (InfoNCE needs negatives), got {cfg.batch_size}")
    if cfg.workers < 0:
        raise UserInputError(f"--workers must be 0 or more, got {cfg.workers}")
    for name, rate, positive in (("--lr", cfg.lr, True), ("--weight-decay", cfg.weight_decay, False),
                                 ("--warmup-epochs", cfg.warmup_epochs, False)):
        if not math.isfinite(rate) or rate < 0 or (positive and rate == 0):
            raise UserInputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {rate}")
    if not (math.isfinite(cfg.clip_grad) and cfg.clip_grad > 0):
        # no command-line option sets it: named as the TrainConfig field
        raise UserInputError(f"TrainConfig.clip_grad must be a finite number > 0, got {cfg.clip_grad}")
    check_fov(cfg.fov)
    if cfg.random_heading and cfg.fov is None:
        raise UserInputError("--random-heading needs a limited field of view (--fov DEG)")
    if cfg.data_root is None and spec.prepare is None:
        raise UserInputError(f"--data-root is required for --dataset {spec.name}")
    spec.check_split(cfg.eval_split)
    if Sampling(cfg.sampling).needs_gps and not spec.has_gps:
        raise UserInputError(
            f"--sampling {cfg.sampling} needs GPS coordinates, which --dataset {spec.name} does not "
            "provide; use --sampling random"
        )
    if cfg.batch_size % world_size:
        raise UserInputError(
            f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({world_size}), "
            "so that every process takes an equal share of each batch"
        )
    _check_chunk_size(cfg)
    if world_size > 1 and cfg.skip_bad_images:
        # A dropped pair would give the ranks unequal batch shares, which the gather cannot take.
        raise UserInputError("--skip-bad-images works in single-process runs only; fix or remove the bad images")


def _check_chunk_size(cfg: TrainConfig) -> None:
    size = cfg.chunk_size
    if size != "auto" and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise UserInputError(
            f"--chunk-size {size!r}: expected a number of pairs per chunk (0 = the whole batch at once) or auto"
        )
    if size != 0 and uses_batch_statistics(cfg.backbone, cfg.backbone_args):
        raise UserInputError(
            f"--chunk-size with --backbone {cfg.backbone}: its BatchNorm layers normalise each forward pass "
            "with the statistics of the images in it, so a chunked step would not compute the whole batch's "
            "gradient; use a convnext_* backbone, or --chunk-size 0"
        )


__all__ = ["check_config"]
