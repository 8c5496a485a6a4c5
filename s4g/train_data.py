"""What a training run reads: option checks, the data root (incl. the cached synthetic world),
the run directory, and the loaded train/eval records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import s4g
from s4g import distributed as D
from s4g.config import DATASETS, SAMPLINGS, TrainConfig
from s4g.data.records import EvalSet, TrainSet
from s4g.data.synthetic import GENERATOR_VERSION
from s4g.errors import UserInputError
from s4g.model import BACKBONES

# The synthetic world of `s4g train --dataset synthetic`: a CVUSA-layout tree (one aerial
# tile per panorama, GPS for every class, test area apart from the training area).
SYNTH_LAYOUT = "cvusa"
# World knobs passed to s4g.data.synthetic.write_layout; chosen so that a small CNN from
# scratch learns visibly in minutes on 2 CPU cores (see benches/bench_sampling.py).
# palette "unique" = one colour per building for roof and walls: learnable from scratch in
# minutes (and partly by colour statistics alone, hence the colour baseline in metrics.jsonl).
SYNTH_KNOBS: dict[str, Any] = {"size": "small", "palette": "unique"}
_COMPLETE = ".s4g-complete"


def check_config(cfg: TrainConfig) -> None:
    """UserInputError naming the option for values no run can use."""
    if cfg.dataset not in DATASETS:
        raise UserInputError(f"--dataset {cfg.dataset!r}: choose one of {', '.join(DATASETS)}")
    if cfg.backbone not in BACKBONES:
        raise UserInputError(f"--backbone {cfg.backbone!r}: choose one of {', '.join(sorted(BACKBONES))}")
    if cfg.sampling not in SAMPLINGS:
        raise UserInputError(f"--sampling {cfg.sampling!r}: choose one of {', '.join(SAMPLINGS)}")
    positive = {"--epochs": cfg.epochs, "--batch-size": cfg.batch_size, "--log-every": cfg.log_every,
                "--eval-every": cfg.eval_every, "--aerial-size": cfg.aerial_size,
                "--eval-batch-size": cfg.eval_batch_size, "--gps-k": cfg.gps_k,
                "--neighbour-range": cfg.neighbour_range, "--neighbour-select": cfg.neighbour_select}
    for name, value in positive.items():
        if value < 1:
            raise UserInputError(f"{name} must be at least 1, got {value}")
    if cfg.batch_size < 2:
        raise UserInputError(f"--batch-size must be at least 2 (InfoNCE needs negatives), got {cfg.batch_size}")
    if len(cfg.ground_size) != 2 or min(cfg.ground_size) < 1:
        raise UserInputError(f"--ground-size: expected two positive sizes H W, got {cfg.ground_size}")
    if cfg.workers < 0:
        raise UserInputError(f"--workers must be 0 or more, got {cfg.workers}")
    if not cfg.lr > 0 or cfg.weight_decay < 0 or cfg.warmup_epochs < 0 or not cfg.clip_grad > 0:
        raise UserInputError("--lr and --clip-grad must be > 0, --weight-decay and --warmup-epochs >= 0")
    if cfg.data_root is None and cfg.dataset != "synthetic":
        raise UserInputError(f"--data-root is required for --dataset {cfg.dataset}")


def loader_name(dataset: str) -> str:
    """The loader that reads `dataset` (the synthetic world is written in CVUSA's layout)."""
    return SYNTH_LAYOUT if dataset == "synthetic" else dataset


def synth_params(cfg: TrainConfig) -> dict[str, Any]:
    """Everything the synthetic world depends on (its cache key)."""
    return {"layout": SYNTH_LAYOUT, "locations": cfg.synth_locations, "seed": cfg.synth_seed,
            "knobs": SYNTH_KNOBS, "generator": GENERATOR_VERSION,
            "s4g": s4g.__version__}


def default_synth_root(cfg: TrainConfig) -> Path:
    """$XDG_CACHE_HOME/s4g/synthetic-<hash of the world's parameters> (~/.cache if unset)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(json.dumps(synth_params(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_home) / "s4g" / f"synthetic-{key}"


def ensure_synthetic_world(root: Path, cfg: TrainConfig) -> Path:
    """Write the synthetic world into `root` unless a complete one with the same parameters
    is there; written beside it and renamed, so an interrupted write is never reused."""
    params = synth_params(cfg)
    marker = root / _COMPLETE
    if marker.is_file():
        if json.loads(marker.read_text()) != params:
            raise UserInputError(
                f"--data-root {root}: holds a synthetic world made with other parameters "
                f"({marker.read_text().strip()}); choose another folder"
            )
        return root
    if root.exists() and any(root.iterdir()):
        raise UserInputError(
            f"--data-root {root}: the folder is not empty and holds no s4g synthetic world; "
            "give an empty or new folder"
        )
    from s4g.data.synthetic import write_layout

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_layout(SYNTH_LAYOUT, tmp, locations=cfg.synth_locations, seed=cfg.synth_seed, **SYNTH_KNOBS)
        (tmp / _COMPLETE).write_text(json.dumps(params, sort_keys=True) + "\n")
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def resolve_data_root(cfg: TrainConfig, env: D.DistEnv) -> TrainConfig:
    """cfg with an absolute data_root; for "synthetic", rank 0 writes the world if needed."""
    if cfg.dataset != "synthetic":
        return dataclasses.replace(cfg, data_root=str(Path(cfg.data_root).expanduser().resolve()))
    root = Path(cfg.data_root).expanduser().resolve() if cfg.data_root else default_synth_root(cfg)
    if env.is_main:
        ensure_synthetic_world(root, cfg)
    D.barrier(env)
    return dataclasses.replace(cfg, data_root=str(root))


def run_dir_for(cfg: TrainConfig) -> Path:
    """cfg.out, or a new runs/<dataset>-<YYYYmmdd-HHMMSS>/ under the current directory."""
    if cfg.out is not None:
        return Path(cfg.out).expanduser().resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{cfg.dataset}-{stamp}"
    n = 1
    while path.exists():  # two runs started within one second
        n += 1
        path = Path("runs") / f"{cfg.dataset}-{stamp}-{n}"
    return path.resolve()


@dataclasses.dataclass
class RunData:
    """The loaded records of a run. eval is None on ranks other than 0."""

    train: TrainSet
    eval: EvalSet | None
    pairs: Any  # s4g.data.dataset.PairDataset
    baseline: dict[str, float] | None = None

    _gps: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    def gps_neighbours(self, k: int) -> np.ndarray:
        """(C, min(k, C-1)) int64 nearest other classes by great-circle distance, computed once."""
        k = min(k, self.train.num_classes - 1)
        if k not in self._gps:
            from s4g.sampling import gps_neighbours

            self._gps[k] = gps_neighbours(self.train.class_lat, self.train.class_lon, k)[0]
        return self._gps[k]


def load_run_data(cfg: TrainConfig, *, with_eval: bool) -> RunData:
    """Train records + paired dataset (+ eval records and, for synthetic, the colour baseline)."""
    from s4g.data import load_eval, load_train
    from s4g.data.dataset import PairDataset
    from s4g.data.transforms import fov_size

    name = loader_name(cfg.dataset)
    train = load_train(name, cfg.data_root, split_dir=cfg.split_dir)
    if cfg.batch_size > train.num_classes:
        raise UserInputError(
            f"--batch-size {cfg.batch_size} is larger than the number of training classes "
            f"({train.num_classes}) in {cfg.data_root}; a batch holds each class at most once"
        )
    if cfg.sampling in ("gps", "dss") and (train.class_lat is None or train.class_lon is None):
        raise UserInputError(
            f"--sampling {cfg.sampling} needs GPS coordinates, which the {cfg.dataset} data in "
            f"{cfg.data_root} does not provide; use --sampling random"
        )
    # a limited view keeps the panorama's scale (H, W * fov / 360), as at evaluation
    ground_hw = fov_size(cfg.ground_size, cfg.fov if train.query_kind == "panorama" else None)
    pairs = PairDataset(train, cfg.aerial_size, ground_hw, augment=cfg.augment, fov=cfg.fov,
                        random_heading=cfg.random_heading, skip_bad_images=cfg.skip_bad_images,
                        seed=cfg.seed)
    ev = load_eval(name, cfg.data_root, cfg.eval_split, split_dir=cfg.split_dir) if with_eval else None
    baseline = None
    if with_eval and cfg.dataset == "synthetic":
        from s4g.data.synth_baseline import colour_histogram_recall

        baseline = colour_histogram_recall(ev.query_files, ev.reference_files, ev.query_labels,
                                           ev.reference_labels)
    return RunData(train, ev, pairs, baseline)


__all__ = [
    "RunData",
    "check_config",
    "default_synth_root",
    "ensure_synthetic_world",
    "load_run_data",
    "loader_name",
    "resolve_data_root",
    "run_dir_for",
]
