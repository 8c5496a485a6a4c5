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
    augment: bool = True


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
    # The built-in CPU-sized default: a small world from `s4g.data.synthetic`, a small backbone
    # from scratch, eval (and re-mining) every epoch. Sizes and epochs chosen so that R@1 rises
    # well above chance within a few minutes on 2 CPU cores (see benches/bench_sampling.py).
    # No augmentation: the photometric ops cost ~20-60 ms per pair on such a CPU, 10x the
    # model step, and ~200 steps on 1,200 pairs do not need it to generalise.
    "synthetic": Preset(
        aerial_size=64,
        ground_size=(32, 128),
        epochs=10,
        batch_size=64,
        warmup_epochs=1.0,
        sampling="random",
        neighbour_select=16,
        neighbour_range=32,
        gps_k=32,
        eval_every=1,
        backbone="convnext_micro_ls1",
        pretrained=False,
        augment=False,
    ),
}


def preset_for(dataset: str) -> Preset:
    """The preset of `dataset`; ValueError listing the valid names otherwise."""
    try:
        return PRESETS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of: {', '.join(sorted(PRESETS))}"
        ) from None


SAMPLINGS = ("random", "gps", "dss")


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Preset):
    """Everything one training run depends on; saved as config.json and in every checkpoint.

    The Preset fields (the recipe) plus the run's own. Starts from the dataset's Preset
    (`TrainConfig.from_preset`) and is changed with `dataclasses.replace`. Sizes in pixels,
    ground_size (H, W); lr per step, cosine-decayed after `warmup_epochs` of linear warm-up.
    `data_root` None for "synthetic" means the cached world under $XDG_CACHE_HOME/s4g (written
    on first use). `out` None means runs/<dataset>-<YYYYmmdd-HHMMSS>/ under the current
    directory. `fov`/`random_heading` crop training panoramas to a limited field of view
    (degrees) at a random heading. `device`: "auto" (CUDA if present, else CPU), "cpu", "cuda"
    or "cuda:N". `synth_locations`/`synth_seed`: size and seed of the synthetic world.
    """

    dataset: str
    data_root: str | None = None
    out: str | None = None
    weights: str | None = None
    split_dir: str = "splits"
    seed: int = 0
    workers: int = 4
    device: str = "auto"
    eval_batch_size: int = 128
    fov: float | None = None
    random_heading: bool = False
    skip_bad_images: bool = False
    log_every: int = 20
    synth_locations: int = 1500
    synth_seed: int = 0

    @classmethod
    def from_preset(cls, dataset: str, **overrides) -> "TrainConfig":
        """The dataset's preset values, then `overrides` (field name -> value; None = keep)."""
        preset = preset_for(dataset)
        base = {f: getattr(preset, f) for f in Preset.__dataclass_fields__}
        if dataset == "synthetic":
            base["workers"] = 0  # the tiny world decodes faster in-process on 2 cores
        base.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(base) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        base["ground_size"] = tuple(int(v) for v in base["ground_size"])
        return cls(dataset=dataset, **base)

    @classmethod
    def from_dict(cls, saved: dict, **overrides) -> "TrainConfig":
        """The config a run saved (config.json / a checkpoint's "config"), then `overrides`
        (None = keep); keys this version does not know are ignored."""
        values = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "dataset" not in values:
            raise ValueError("the saved run configuration has no 'dataset'")
        values["ground_size"] = tuple(int(v) for v in values.get("ground_size", (140, 768)))
        return cls(**values)


__all__ = ["DATASETS", "PRESETS", "SAMPLINGS", "Preset", "TrainConfig", "preset_for"]
