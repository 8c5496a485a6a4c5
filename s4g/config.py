"""Run configuration: one frozen dataclass per run, built once from the command line.

`Preset` is a dataset's training recipe (the paper's values; each dataset's lives in its
s4g.data.registry entry), `TrainConfig` everything one training run depends on (saved as
config.json and in every checkpoint), `InferenceConfig` what `s4g eval` and `s4g mine` read.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass
from typing import Any

from s4g.errors import UserInputError
from s4g.flags import Flag


class Sampling(str, enum.Enum):
    """--sampling: how a training epoch's batches are drawn. random: shuffled pairs; gps: each
    anchor packed with its nearest classes by GPS; dss: GPS lists until the first mining, then
    the lists mined by the model (s4g.app.jobs.train.schedule.SamplingPolicy says when)."""

    RANDOM = "random"
    GPS = "gps"
    DSS = "dss"

    @property
    def needs_gps(self) -> bool:
        """Whether the training classes need positions."""
        return self is not Sampling.RANDOM


SAMPLINGS = tuple(s.value for s in Sampling)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Preset:
    """The paper's training recipe for one dataset.

    aerial_size: side of the square aerial tile fed to the model, pixels.
    ground_size: (H, W) of the ground image fed to the model, pixels.
    warmup_epochs may be fractional (University-1652 warms up for 0.1 epoch).
    sampling: "dss" = GPS neighbours until the first evaluation after epoch 1 (epoch
      eval_every), then neighbours mined from the model's embeddings, re-mined at every
      evaluation; "gps" = GPS neighbours every epoch; "random" = class-unique random batches.
    pretrained / pretrained_from: start from downloaded ImageNet weights, "timm"'s
      (ConvNeXt: fb_in22k_ft_in1k_384, the paper's) or "torchvision"'s (ImageNet-1k, 224 px).
    max_failed_pops: the packing walk's patience (s4g.sampling.pack_batches), 1024 in the
      reference's CVUSA/CVACT/VIGOR loops and 512 in its University-1652 loop.
    workers: DataLoader worker processes.
    """

    aerial_size: int = 384
    ground_size: tuple[int, int] = (140, 768)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    clip_grad: float = 100.0
    label_smoothing: float = 0.1
    sampling: str = "dss"
    neighbour_select: int = 64
    neighbour_range: int = 128
    max_failed_pops: int = 1024
    gps_k: int = 128
    eval_every: int = 4
    backbone: str = "convnext_base"
    pretrained: bool = True
    pretrained_from: str = "timm"
    eval_split: str = "test"
    augment: bool = True
    workers: int = 4


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Preset):
    """Everything one training run depends on; saved as config.json and in every checkpoint.

    The Preset fields (the recipe) plus the run's own. Sizes in pixels, ground_size (H, W);
    lr per step, cosine-decayed after `warmup_epochs` of linear warm-up. `data_root` None
    means the dataset's own default (the cached world for "synthetic"). `out` None means
    runs/<dataset>-<YYYYmmdd-HHMMSS>/ under the current directory. `fov`/`random_heading` crop
    training panoramas to a limited field of view (degrees) at a random heading.
    `check_images`: read every training image's header before the first evaluation. `device`:
    "auto" (CUDA if present, else CPU), "cpu", "cuda" or "cuda:N". `synth_locations` /
    `synth_seed`: size and seed of the synthetic world. `lists`: "s4g" (exact GPS lists, a
    tile mined by the mean of its queries, lists cut to `neighbour_range` before packing) or
    "released" (the released code's lists: s4g.retrieval.released).
    `backbone_args` (timm backbones: timm.create_model keywords), `head`, `head_args`,
    `lora_rank`: the model (s4g.model.encoder.EmbeddingModel); `train_blocks` None trains the whole
    backbone, N only its last N blocks/stages (s4g.model.encoder.set_trainable); the backbone's
    learning rate is `backbone_lr_scale` times the head's.
    """

    dataset: str
    data_root: str | None = None
    out: str | None = None
    weights: str | None = None
    split_dir: str = "splits"
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 128
    fov: float | None = None
    random_heading: bool = False
    skip_bad_images: bool = False
    check_images: bool = True
    log_every: int = 20
    synth_locations: int = 1500
    synth_seed: int = 0
    chunk_size: int | str = 0
    lists: str = "s4g"
    backbone_args: dict[str, Any] | None = None
    head: str = "pool"
    head_args: dict[str, Any] | None = None
    lora_rank: int = 0
    train_blocks: int | None = None
    backbone_lr_scale: float = 1.0

    @classmethod
    def from_preset(cls, dataset: str, preset: Preset, **overrides: Any) -> TrainConfig:
        """`preset`'s values for `dataset`, then `overrides` (field name -> value; None = keep)."""
        base = dataclasses.asdict(preset)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls._make(dataset=dataset, **base)

    @classmethod
    def from_dict(cls, saved: dict, **overrides: Any) -> TrainConfig:
        """The config a run saved (config.json / a checkpoint's "config"), then `overrides`
        (None = keep); keys this version does not know are ignored."""
        values = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "dataset" not in values:
            raise UserInputError(f"the saved run configuration has no 'dataset'; pass {Flag.DATASET}")
        return cls._make(**values)

    @classmethod
    def _make(cls, **values: Any) -> TrainConfig:
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown training option(s): {', '.join(unknown)}")
        values["ground_size"] = tuple(int(v) for v in values.get("ground_size", Preset.ground_size))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON types (ground_size as a list), as config.json holds them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class InferenceConfig:
    """What `s4g eval` / `s4g mine` read: the command line first, the checkpoint's config second.

    dataset: a registry name; split None = the dataset's default eval split; sizes in pixels,
    ground_size (H, W); batch_size images per forward pass; fov degrees or None.
    """

    dataset: str
    data_root: str
    split_dir: str
    split: str | None
    aerial_size: int
    ground_size: tuple[int, int]
    batch_size: int
    workers: int
    fov: float | None
    random_heading: bool


__all__ = ["SAMPLINGS", "Sampling", "InferenceConfig", "Preset", "TrainConfig"]
