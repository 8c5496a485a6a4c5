"""The one registry of datasets: what each `--dataset` name is.

Every place that needs to know about datasets — CLI choices and help, option checks, the
reader that indexes a data root, the recipe's defaults, the evaluation splits and metric
protocol, whether GPS sampling is possible, how a data root comes to exist — reads it from
the `DatasetSpec` here; no other list of dataset names exists. Adding a dataset is one entry
below plus one reader module in s4g/data/ (see ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4g.config import Preset, TrainConfig, usable_cpus
from s4g.data import csvpairs, cvact, cvusa, university, vigor
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError
from s4g.flags import Flag


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    load_train(root, *, split_dir) -> TrainSet and load_eval(root, split, *, split_dir) ->
      EvalSet: the reader; indexing lists folders, never opens an image.
    eval_splits: valid --split values; preset.eval_split is the default.
    protocol: how its published metrics count (s4g.retrieval.evaluate.PROTOCOLS: "sample4geo" or
      "university1652", which differ in R@1%).
    has_gps: its training classes carry coordinates (GPS and DSS sampling, `s4g neighbours`).
    split_dir: --split-dir selects its split files (CVUSA, VIGOR).
    prepare(root, locations=, seed=) -> Path: makes the data root exist (the built-in
      synthetic world); None = the user's --data-root, which is required.
    colour_baseline: training also reports a colour-histogram matcher's R@1 (a world where
      colour alone goes far, so the model's numbers read honestly).
    """

    name: str
    summary: str
    preset: Preset
    load_train: Callable[..., TrainSet]
    load_eval: Callable[..., EvalSet]
    eval_splits: tuple[str, ...]
    protocol: str = "sample4geo"
    has_gps: bool = True
    split_dir: bool = False
    prepare: Callable[..., Path] | None = None
    colour_baseline: bool = False

    def data_root(self, root: str | Path | None, *, locations: int = TrainConfig.synth_locations,
                  seed: int = TrainConfig.synth_seed) -> Path:
        """The absolute data root: `root` as given, or what `prepare` makes (locations and
        seed size the synthetic world). UserInputError when a needed --data-root is missing."""
        if self.prepare is not None:
            return self.prepare(root, locations=locations, seed=seed)
        if root is None:
            raise UserInputError(f"{Flag.DATA_ROOT} is required for {Flag.DATASET} {self.name}")
        return Path(root).expanduser().resolve()

    def check_split(self, split: str | None) -> str:
        """`split` (None = the preset's), or UserInputError listing the valid ones."""
        split = self.preset.eval_split if split is None else split
        if split not in self.eval_splits:
            raise UserInputError(
                f"{Flag.SPLIT} {split!r} is not a split of {Flag.DATASET} {self.name}; "
                f"valid: {', '.join(self.eval_splits)}"
            )
        return split


_PAPER = Preset()
_VIGOR = Preset(ground_size=(384, 768))
_UNIVERSITY = Preset(ground_size=(384, 384), epochs=1, warmup_epochs=0.1, sampling="random", eval_every=1,
                     max_failed_pops=512)


def _synthetic_world(root: str | Path | None, *, locations: int, seed: int) -> Path:
    """The data root of --dataset synthetic: `root`, or the cached world (s4g.app.synth.cache)."""
    # The world and its renderers belong to the application; only a run that asks for the
    # synthetic dataset loads them, so the registry (and `s4g --help`) stays light.
    from s4g.app.synth import cache

    return cache.ensure_world(root, locations=locations, seed=seed)


# The built-in CPU-sized default: a small world, a small backbone from scratch, evaluated
# every epoch. Sizes and epochs chosen so that R@1 rises well above chance within a few
# minutes on a small CPU (benches/bench_sampling.py). No augmentation: on a CPU the
# photometric ops cost more than the tiny model's step, and a few hundred steps do not need
# it to generalise. Workers 0: the tiny images decode faster in-process.
_SYNTHETIC = Preset(
    aerial_size=64, ground_size=(32, 128), epochs=10, batch_size=64, warmup_epochs=1.0,
    sampling="random", neighbour_select=16, neighbour_range=32, gps_k=32, eval_every=1,
    backbone="convnext_micro_ls1", pretrained=False, augment=False, workers=0,
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("cvusa", "CVUSA (35,532 train / 8,884 test panoramas, one tile each)", _PAPER,
                cvusa.load_train, cvusa.load_eval, cvusa.EVAL_SPLITS, split_dir=True),
    DatasetSpec("cvact", "CVACT (val and the 92,802-pair test split)", Preset(eval_split="val"),
                cvact.load_train, cvact.load_eval, cvact.EVAL_SPLITS),
    DatasetSpec("vigor-same", "VIGOR same-area (train and test in all four cities)", _VIGOR,
                functools.partial(vigor.load_train, mode="same"),
                functools.partial(vigor.load_eval, mode="same"), vigor.EVAL_SPLITS, split_dir=True),
    DatasetSpec("vigor-cross", "VIGOR cross-area (train NewYork+Seattle, test Chicago+SanFrancisco)", _VIGOR,
                functools.partial(vigor.load_train, mode="cross"),
                functools.partial(vigor.load_eval, mode="cross"), vigor.EVAL_SPLITS, split_dir=True),
    DatasetSpec("university-d2s", "University-1652 drone -> satellite", _UNIVERSITY,
                university.load_train, functools.partial(university.load_eval, direction="d2s"),
                university.EVAL_SPLITS, protocol="university1652", has_gps=False),
    DatasetSpec("university-s2d", "University-1652 satellite -> drone", _UNIVERSITY,
                university.load_train, functools.partial(university.load_eval, direction="s2d"),
                university.EVAL_SPLITS, protocol="university1652", has_gps=False),
    DatasetSpec("csv", "your own pairs.csv (query,reference,lat,lon[,split])", _PAPER,
                csvpairs.load_train, csvpairs.load_eval, csvpairs.EVAL_SPLITS),
    DatasetSpec("synthetic", "the built-in procedural world in CVUSA's layout (CPU-sized)", _SYNTHETIC,
                cvusa.load_train, cvusa.load_eval, cvusa.EVAL_SPLITS, prepare=_synthetic_world,
                colour_baseline=True),
)}
NAMES = tuple(DATASETS)


def get(name: str) -> DatasetSpec:
    """The spec of `name`; UserInputError listing the valid names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserInputError(
            f"{Flag.DATASET} {name!r} is not a dataset s4g knows; choose one of: {', '.join(NAMES)}"
        ) from None


def train_config(name: str, **overrides: Any) -> TrainConfig:
    """The training configuration of dataset `name`: its preset, with no more DataLoader
    workers than this machine's usable CPUs (more only compete for them), then `overrides`
    (None = keep)."""
    preset = get(name).preset
    preset = dataclasses.replace(preset, workers=min(preset.workers, usable_cpus()))
    return TrainConfig.from_preset(name, preset, **overrides)


def load_train(name: str, root: str | Path, *, split_dir: str = "splits") -> TrainSet:
    """The training pairs of dataset `name` under `root` (an existing data root)."""
    return get(name).load_train(root, split_dir=split_dir)


def load_eval(name: str, root: str | Path, split: str | None = None, *, split_dir: str = "splits") -> EvalSet:
    """The evaluation split `split` (None = the preset's) of dataset `name` under `root`."""
    spec = get(name)
    return spec.load_eval(root, spec.check_split(split), split_dir=split_dir)


__all__ = ["DATASETS", "NAMES", "DatasetSpec", "get", "load_eval", "load_train", "train_config"]
