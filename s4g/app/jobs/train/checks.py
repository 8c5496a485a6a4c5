"""Every rule a training configuration must satisfy, checked in one pass before any heavy
work; each failure is a UserInputError naming the option as it is spelled on the command line."""

from __future__ import annotations

import math

from s4g.app.synth.cache import LAYOUT
from s4g.app.synth.writer import MIN_LOCATIONS
from s4g.config import SAMPLINGS, Sampling, TrainConfig
from s4g.data.registry import DatasetSpec
from s4g.errors import UserInputError, check_seed
from s4g.flags import Flag
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
        raise UserInputError(f"{Flag.AERIAL_SIZE} must be from 1 to {MAX_IMAGE_SIDE} pixels, got {aerial_size}")
    if ground_size is not None and (len(ground_size) != 2 or not all(1 <= v <= MAX_IMAGE_SIDE for v in ground_size)):
        raise UserInputError(f"{Flag.GROUND_SIZE}: expected two sizes H W from 1 to {MAX_IMAGE_SIDE} pixels, got "
                             f"{' '.join(map(str, ground_size))}")


def check_config(cfg: TrainConfig, spec: DatasetSpec, world_size: int) -> None:
    """The rules that need no data: option values, the dataset's capabilities, the process count."""
    check_backbone(cfg.backbone)
    if cfg.head not in HEADS:
        raise UserInputError(f"{Flag.HEAD} {cfg.head!r}: choose one of {', '.join(HEADS)}")
    if cfg.lora_rank < 0 or (cfg.train_blocks is not None and cfg.train_blocks < 0):
        raise UserInputError(f"{Flag.LORA_RANK} and {Flag.TRAIN_BLOCKS} must be 0 or more")
    if not (math.isfinite(cfg.backbone_lr_scale) and cfg.backbone_lr_scale >= 0):
        raise UserInputError(f"{Flag.BACKBONE_LR_SCALE} must be a finite number >= 0, got {cfg.backbone_lr_scale}")
    if cfg.train_blocks is not None and uses_batch_statistics(cfg.backbone, cfg.backbone_args):
        raise UserInputError(f"{Flag.TRAIN_BLOCKS} with {Flag.BACKBONE} {cfg.backbone}: its frozen BatchNorm layers "
                             "would still update their running statistics; use a convnext_* or ViT backbone")
    if cfg.pretrained_from not in PRETRAINED_FROM:
        raise UserInputError(
            f"{Flag.PRETRAINED_FROM} {cfg.pretrained_from!r}: choose one of {', '.join(PRETRAINED_FROM)}")
    check_lists(cfg.lists)
    if cfg.sampling not in SAMPLINGS:
        raise UserInputError(f"{Flag.SAMPLING} {cfg.sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    at_least_one = {Flag.EPOCHS: cfg.epochs, Flag.BATCH_SIZE: cfg.batch_size, Flag.LOG_EVERY: cfg.log_every,
                    Flag.EVAL_EVERY: cfg.eval_every,
                    Flag.EVAL_BATCH_SIZE: cfg.eval_batch_size, Flag.GPS_K: cfg.gps_k,
                    Flag.NEIGHBOUR_RANGE: cfg.neighbour_range, Flag.NEIGHBOUR_SELECT: cfg.neighbour_select,
                    Flag.MAX_FAILED_POPS: cfg.max_failed_pops}
    for name, value in at_least_one.items():
        if value < 1:
            raise UserInputError(f"{name} must be at least 1, got {value}")
    check_seed(Flag.SEED, cfg.seed)
    check_seed("the synthetic world's seed (synth_seed)", cfg.synth_seed)
    check_image_sizes(cfg.aerial_size, cfg.ground_size)
    if cfg.dataset == "synthetic" and cfg.synth_locations < MIN_LOCATIONS[LAYOUT]:
        raise UserInputError(f"{Flag.LOCATIONS} must be at least {MIN_LOCATIONS[LAYOUT]}, got {cfg.synth_locations}")
    if cfg.batch_size < 2:
        raise UserInputError(f"{Flag.BATCH_SIZE} must be at least 2 (InfoNCE needs negatives), got {cfg.batch_size}")
    if cfg.workers < 0:
        raise UserInputError(f"{Flag.WORKERS} must be 0 or more, got {cfg.workers}")
    for name, rate, positive in ((Flag.LR, cfg.lr, True), (Flag.WEIGHT_DECAY, cfg.weight_decay, False),
                                 (Flag.WARMUP_EPOCHS, cfg.warmup_epochs, False)):
        if not math.isfinite(rate) or rate < 0 or (positive and rate == 0):
            raise UserInputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {rate}")
    if not (math.isfinite(cfg.clip_grad) and cfg.clip_grad > 0):
        # no command-line option sets it: named as the TrainConfig field
        raise UserInputError(f"TrainConfig.clip_grad must be a finite number > 0, got {cfg.clip_grad}")
    check_fov(cfg.fov)
    if cfg.random_heading and cfg.fov is None:
        raise UserInputError(f"{Flag.RANDOM_HEADING} needs a limited field of view ({Flag.FOV} DEG)")
    if cfg.data_root is None and spec.prepare is None:
        raise UserInputError(f"{Flag.DATA_ROOT} is required for {Flag.DATASET} {spec.name}")
    spec.check_split(cfg.eval_split)
    if Sampling(cfg.sampling).needs_gps and not spec.has_gps:
        raise UserInputError(
            f"{Flag.SAMPLING} {cfg.sampling} needs GPS coordinates, which {Flag.DATASET} {spec.name} does not "
            f"provide; use {Flag.SAMPLING} random"
        )
    if cfg.batch_size % world_size:
        raise UserInputError(
            f"{Flag.BATCH_SIZE} {cfg.batch_size} must be divisible by the number of processes ({world_size}), "
            "so that every process takes an equal share of each batch"
        )
    _check_chunk_size(cfg)
    if world_size > 1 and cfg.skip_bad_images:
        # A dropped pair would give the ranks unequal batch shares, which the gather cannot take.
        raise UserInputError(f"{Flag.SKIP_BAD_IMAGES} works in single-process runs only; fix or remove the bad images")


def _check_chunk_size(cfg: TrainConfig) -> None:
    size = cfg.chunk_size
    if size != "auto" and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise UserInputError(
            f"{Flag.CHUNK_SIZE} {size!r}: expected a number of pairs per chunk (0 = the whole batch at once) or auto"
        )
    if size != 0 and uses_batch_statistics(cfg.backbone, cfg.backbone_args):
        raise UserInputError(
            f"{Flag.CHUNK_SIZE} with {Flag.BACKBONE} {cfg.backbone}: its BatchNorm layers normalise each forward pass "
            "with the statistics of the images in it, so a chunked step would not compute the whole batch's "
            f"gradient; use a convnext_* backbone, or {Flag.CHUNK_SIZE} 0"
        )


__all__ = ["check_config"]
