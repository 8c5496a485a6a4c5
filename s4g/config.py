"""Run configuration: one frozen dataclass per run, and one preset per dataset.

Presets hold the reference hyper-parameters of Sample4Geo (see the README); the CLI starts
from the dataset's preset and overrides single fields with `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASETS = (
    "cvusa",
    "cvact",
    "vigor-same",
    "vigor-cross",
    "university-d2s",
    "university-s2d",
    "csv",
    "synthetic",
)


@dataclass(frozen=True)
class Preset:
    """The paper's training recipe for one dataset.

    aerial_size: side of the square aerial tile fed to the model, pixels.
    ground_size: (H, W) of the ground image fed to the model, pixels.
    warmup_epochs may be fractional (University-1652 warms up for 0.1 epoch).
    sampling: "dss" = GPS neighbours in epoch 1, then similarity-mined neighbours;
      "gps" = GPS neighbours every epoch; "random" = class-unique random batches.
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
    gps_k: int = 128
    eval_every: int = 4
    backbone: str = "convnext_base"
    pretrained: bool = True
    eval_split: str = "test"


PRESETS: dict[str, Preset] = {
    "cvusa": Preset(),
    "cvact": Preset(eval_split="val"),
    "vigor-same": Preset(ground_size=(384, 768)),
    "vigor-cross": Preset(ground_size=(384, 768)),
    "university-d2s": Preset(
        ground_size=(384, 384), epochs=1, warmup_epochs=0.1, sampling="random", eval_every=1
    ),
    "university-s2d": Preset(
        ground_size=(384, 384), epochs=1, warmup_epochs=0.1, sampling="random", eval_every=1
    ),
    "csv": Preset(),
}


def preset_for(dataset: str) -> Preset:
    """The preset of `dataset`; ValueError listing the valid names otherwise."""
    try:
        return PRESETS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(PRESETS))}"
        ) from None


__all__ = ["DATASETS", "PRESETS", "Preset", "preset_for"]
