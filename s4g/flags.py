"""The name of every `s4g` command-line option, declared once.

The CLI declares each option under its `Flag` (`typer.Option(Flag.SEED, help=...)`) and every
message that names an option takes the name from here (`f"{Flag.SEED} must be ..."`), so a
message cannot name an option that does not exist: a misspelt member is an attribute error
that mypy reports, and tests/test_cli_options.py checks that the members and the options of
the commands are the same set. Standard library only: the library's messages name options
without importing the application, and `s4g --help` loads this module.
"""

from __future__ import annotations

import enum


class Flag(str, enum.Enum):
    """A command-line option as typed, e.g. `Flag.SEED == "--seed"`; formats as its name in
    f-strings and str() (enum.StrEnum's behaviour, which Python 3.10 lacks)."""

    AERIAL_SIZE = "--aerial-size"
    AUGMENT = "--augment"
    BACKBONE = "--backbone"
    BACKBONE_ARG = "--backbone-arg"
    BACKBONE_LR_SCALE = "--backbone-lr-scale"
    BATCH_SIZE = "--batch-size"
    CHECK_IMAGES = "--check-images"
    CHECKPOINT = "--checkpoint"
    CHUNK_SIZE = "--chunk-size"
    COORDS = "--coords"
    CVACT_MISSING = "--cvact-missing"
    DATA_ROOT = "--data-root"
    DATASET = "--dataset"
    DEVICE = "--device"
    DRONE_VIEWS = "--drone-views"
    EPOCHS = "--epochs"
    EVAL_BATCH_SIZE = "--eval-batch-size"
    EVAL_EVERY = "--eval-every"
    EVAL_SPLIT = "--eval-split"
    EXAMPLES = "--examples"
    EXAMPLES_COUNT = "--examples-count"
    EXAMPLES_SEED = "--examples-seed"
    EXAMPLES_SIZE = "--examples-size"
    FLOAT16 = "--float16"
    FOV = "--fov"
    GEOJSON = "--geojson"
    GPS_K = "--gps-k"
    GROUND_SIZE = "--ground-size"
    HEAD = "--head"
    HEAD_ARG = "--head-arg"
    HEADING = "--heading"
    IMAGES = "--images"
    INDEX = "--index"
    JITTER = "--jitter"
    JSON = "--json"
    K = "--k"
    LAYOUT = "--layout"
    LISTS = "--lists"
    LOCATIONS = "--locations"
    LOG_EVERY = "--log-every"
    LORA_RANK = "--lora-rank"
    LR = "--lr"
    MAX_FAILED_POPS = "--max-failed-pops"
    NEIGHBOUR_RANGE = "--neighbour-range"
    NEIGHBOUR_SELECT = "--neighbour-select"
    NO_AUGMENT = "--no-augment"
    NO_CHECK_IMAGES = "--no-check-images"
    NO_OVERWRITE = "--no-overwrite"
    NO_PRETRAINED = "--no-pretrained"
    NO_RANDOM_HEADING = "--no-random-heading"
    NO_SHADOWS = "--no-shadows"
    OUT = "--out"
    OVERWRITE = "--overwrite"
    PALETTE = "--palette"
    PER_QUERY = "--per-query"
    PICTURE = "--picture"
    PRETRAINED = "--pretrained"
    PRETRAINED_FROM = "--pretrained-from"
    PREVIEW = "--preview"
    RADIUS = "--radius"
    RANDOM_HEADING = "--random-heading"
    RESUME = "--resume"
    RUNS_DIR = "--runs-dir"
    SAMPLING = "--sampling"
    SEED = "--seed"
    SHADING = "--shading"
    SHADOWS = "--shadows"
    SIZE = "--size"
    SKIP_BAD_IMAGES = "--skip-bad-images"
    SPLIT = "--split"
    SPLIT_DIR = "--split-dir"
    TRAIN_BLOCKS = "--train-blocks"
    VERSION = "--version"
    VIGOR_LAYOUT = "--vigor-layout"
    WARMUP_EPOCHS = "--warmup-epochs"
    WEIGHT_DECAY = "--weight-decay"
    WEIGHTS = "--weights"
    WORKERS = "--workers"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


__all__ = ["Flag"]
