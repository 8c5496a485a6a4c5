"""What a training run reads: its records, the paired image dataset, the GPS neighbour lists,
each epoch's packed batches, and where its files go."""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

from s4g.app.jobs.train.schedule import SamplingPolicy
from s4g.config import Sampling, TrainConfig
from s4g.data.records import EvalSet, TrainSet
from s4g.data.registry import DatasetSpec
from s4g.errors import UserInputError
from s4g.flags import Flag
from s4g.pipeline.dataset import BadImageWarning, PairDataset
from s4g.pipeline.images import find_bad_images
from s4g.pipeline.transforms import View
from s4g.retrieval.baseline import colour_histogram_recall
from s4g.retrieval.released import released_gps_neighbours
from s4g.runtime import progress
from s4g.sampling import PackStats, gps_neighbours, pack_batches


@dataclasses.dataclass
class RunData:
    """The loaded records of a run (eval None when not asked for); baseline is the
    colour-histogram R@1 of datasets that report one (computed by rank 0 only)."""

    train: TrainSet
    eval: EvalSet | None
    pairs: PairDataset
    baseline: dict[str, float] | None = None

    _gps: dict[tuple[int, str], np.ndarray] = dataclasses.field(default_factory=dict)

    def gps_neighbours(self, k: int, lists: str = "s4g") -> np.ndarray:
        """(C, min(k, C-1)) int64 nearest other classes, computed once: by great-circle
        distance ("s4g"), or as the released scripts rank them ("released")."""
        k = min(k, self.train.num_classes - 1)
        if (k, lists) not in self._gps:
            lat, lon = self.train.class_lat, self.train.class_lon
            assert lat is not None and lon is not None  # load_run_data refuses gps/dss sampling without them
            self._gps[k, lists] = (released_gps_neighbours(lat, lon, k) if lists == "released"
                                   else gps_neighbours(lat, lon, k)[0])
        return self._gps[k, lists]


def load_run_data(cfg: TrainConfig, spec: DatasetSpec, *, with_eval: bool) -> RunData:
    """Train records + paired dataset (+ eval records), with the cheap checks that need the
    data. cfg.data_root must already be the prepared, absolute root. The slow checks and the
    colour baseline are `main_process_checks`, which one process runs for all."""
    train = spec.load_train(cfg.data_root, split_dir=cfg.split_dir)
    if cfg.batch_size > train.num_classes:
        raise UserInputError(
            f"{Flag.BATCH_SIZE} {cfg.batch_size} is larger than the number of training classes "
            f"({train.num_classes}) in {cfg.data_root}; a batch holds each class at most once"
        )
    if Sampling(cfg.sampling).needs_gps and (train.class_lat is None or train.class_lon is None):
        raise UserInputError(
            f"{Flag.SAMPLING} {cfg.sampling} needs GPS coordinates, which the {cfg.dataset} data in "
            f"{cfg.data_root} does not provide; use {Flag.SAMPLING} random"
        )
    # the run's one View: its training pairs, and its evaluations (the pairs hand it on)
    view = View(cfg.aerial_size, cfg.ground_size, fov=cfg.fov, random_heading=cfg.random_heading, seed=cfg.seed)
    pairs = PairDataset(train, view, augment=cfg.augment, skip_bad_images=cfg.skip_bad_images)
    ev = spec.load_eval(cfg.data_root, cfg.eval_split, split_dir=cfg.split_dir) if with_eval else None
    return RunData(train, ev, pairs)


def main_process_checks(cfg: TrainConfig, spec: DatasetSpec, data: RunData) -> dict[str, float] | None:
    """The header check of every training image (unless --no-check-images) and the
    colour-histogram baseline of datasets that report one (its metrics, or None)."""
    if cfg.check_images:
        check_training_images(data.train, skip_bad=cfg.skip_bad_images)
    if data.eval is None or not spec.colour_baseline:
        return None
    ev = data.eval
    return colour_histogram_recall(ev.query_files, ev.reference_files, ev.query_labels, ev.reference_labels,
                                   protocol=spec.protocol)


def check_training_images(train: TrainSet, *, skip_bad: bool) -> None:
    """Read the header of every training image (in parallel, with a progress bar on a
    terminal); UserInputError listing unusable ones, or with skip_bad a BadImageWarning
    (their pairs are dropped as they come up in batches)."""
    files = list(dict.fromkeys([*train.query_files, *train.reference_files]))
    with progress() as bar:
        task = bar.add_task("checking training images", total=len(files))
        bad = find_bad_images(files, advance=lambda n: bar.advance(task, n))
    if not bad:
        return
    shown = "; ".join(f"{path}: {problem}" for path, problem in bad[:3]) + ("; ..." if len(bad) > 3 else "")
    if skip_bad:
        warnings.warn(BadImageWarning(
            f"{len(bad)} of {len(files)} training images cannot be used ({shown}); their pairs are "
            f"skipped ({Flag.SKIP_BAD_IMAGES})"), stacklevel=2)
        return
    raise UserInputError(
        f"{len(bad)} of {len(files)} training images cannot be used: {shown}. Replace or remove them, "
        f"pass {Flag.SKIP_BAD_IMAGES} to train without their pairs, or {Flag.NO_CHECK_IMAGES} to skip this check"
    )


def epoch_neighbours(cfg: TrainConfig, data: RunData, mined: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """(neighbour lists the packer uses, their source "none" | "gps" | "mined"): none for
    random batches, the mined DSS lists once there are some, GPS lists before."""
    source = SamplingPolicy.of(cfg).lists(mined is not None)
    if source == "none":
        return None, source
    if source == "mined":
        return mined, source
    return data.gps_neighbours(cfg.gps_k, cfg.lists), source


def epoch_batches(
    cfg: TrainConfig, data: RunData, neighbours: np.ndarray | None, epoch: int
) -> tuple[np.ndarray, PackStats]:
    """((n_batches, batch_size) int64 pair indices of `epoch`'s global batches, packing
    stats), seeded by seed + epoch. Each list is cut to its first neighbour_range entries, the
    pool the reference draws from: before packing (s4g), or as each anchor draws, after its
    earlier pulls were removed (--lists released). UserInputError when not even one full
    batch can be packed."""
    in_range = None
    if neighbours is not None and cfg.lists == "released":
        in_range = cfg.neighbour_range
    elif neighbours is not None:
        neighbours = neighbours[:, : cfg.neighbour_range]
    batches, stats = pack_batches(data.train.pair_class, neighbours, cfg.batch_size,
                                  neighbour_select=cfg.neighbour_select, seed=cfg.seed + epoch,
                                  max_failed_pops=cfg.max_failed_pops, return_stats=True,
                                  neighbour_range=in_range)
    if len(batches) == 0:
        raise UserInputError(
            f"{Flag.BATCH_SIZE} {cfg.batch_size}: no full batch could be packed from "
            f"{data.train.num_pairs} training pairs; lower the batch size"
        )
    return batches, stats


def run_dir_for(cfg: TrainConfig) -> Path:
    """cfg.out, or a new runs/<dataset>-<YYYYmmdd-HHMMSS>/ under the current directory
    (created here, so that two runs started within one second get two folders)."""
    if cfg.out is not None:
        return Path(cfg.out).expanduser().resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    Path("runs").mkdir(exist_ok=True)
    for n in range(1, 1000):
        path = Path("runs") / (f"{cfg.dataset}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()
    raise UserInputError(f"runs/{cfg.dataset}-{stamp}-*: 999 run folders already; give {Flag.OUT}")


__all__ = ["RunData", "check_training_images", "epoch_batches", "epoch_neighbours", "load_run_data",
           "main_process_checks", "run_dir_for"]
