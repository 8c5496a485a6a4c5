"""The jobs of `s4g eval` and `s4g mine`: a checkpoint's metrics on a split, and its DSS
neighbour lists, written to files.

Both run on several GPUs under torchrun: every process embeds a share of the images, rank 0
scores them and writes; the other ranks return None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from s4g import distributed as D
from s4g.app.jobs.inference import evaluate_split, inference_config, latest_checkpoint, mine_training_set
from s4g.config import InferenceConfig
from s4g.data import registry as datasets
from s4g.data.records import EvalSet
from s4g.errors import UserInputError, check_seed
from s4g.fileio import PNG_IMAGE, check_distinct_outputs, check_output, json_kind, marked, npz_kind, save_json, save_npz
from s4g.flags import Flag
from s4g.model.checkpoint import load_checkpoint
from s4g.pipeline.transforms import View, check_fov
from s4g.retrieval.results import PER_QUERY_FILE, TOP_K

METRICS_FILE = json_kind("an s4g eval metrics file", "checkpoint", "metrics")
MINED_FILE = npz_kind("an s4g mine neighbour file", "neighbours", "reference_files")


@dataclass
class EvalReport:
    """What `s4g eval` prints: the split's sizes and metrics, and one line per file written."""

    dataset: str
    split: str
    eval_set: EvalSet
    metrics: dict[str, float]
    written: list[str] = field(default_factory=list)


def default_metrics_path(checkpoint: Path, dataset: str, split: str, view: View) -> Path:
    """eval-<dataset>-<split>[-fov<deg>-north | -fov<deg>-random-seed<seed>].json beside the
    checkpoint: evaluations of other views of the same split never share a file."""
    seen = "" if view.fov is None else f"-fov{view.fov:g}-" + (
        f"random-seed{view.seed}" if view.random_heading else "north")
    return checkpoint.parent / f"eval-{dataset}-{split}{seen}.json"


def evaluate_checkpoint(
    *, checkpoint: Path | None, runs_dir: Path, device: str | None, dataset: str | None, data_root: Path | None,
    split: str | None, split_dir: str | None, batch_size: int | None, workers: int | None, fov: float | None,
    random_heading: bool | None, seed: int, aerial_size: int | None, ground_size: tuple[int, int] | None,
    json_out: Path | None, per_query: Path | None, examples: Path | None, examples_count: int,
    examples_seed: int, examples_size: int, overwrite: bool, console: Console,
) -> EvalReport | None:
    """Evaluate `checkpoint` (default: the newest run's best.pt under `runs_dir`) on a split and
    write the metrics JSON (and the --per-query CSV, the --examples PNG); None on ranks > 0.

    Every argument is a command-line option (None: not given, the checkpoint's run config
    decides); sizes in pixels, fov in degrees."""
    check_fov(fov)
    check_seed(Flag.SEED, seed)
    check_seed(Flag.EXAMPLES_SEED, examples_seed)
    check_examples(examples_count, examples_size)
    env = D.setup("auto" if device is None else device)
    try:
        ckpt, model, _, cfg = _open(env, checkpoint, runs_dir, console, dataset=dataset, data_root=data_root,
                                    split=split, split_dir=split_dir, batch_size=batch_size, workers=workers,
                                    fov=fov, random_heading=random_heading, aerial_size=aerial_size,
                                    ground_size=ground_size)
        assert cfg.split is not None  # inference_config resolves the split
        view = View(cfg.aerial_size, cfg.ground_size, fov=cfg.fov, random_heading=cfg.random_heading, seed=seed)
        out = json_out or default_metrics_path(ckpt, cfg.dataset, cfg.split, view)
        outputs = ((out, METRICS_FILE, Flag.JSON if json_out else f"the default {Flag.JSON}"),
                   (per_query, PER_QUERY_FILE, Flag.PER_QUERY), (examples, PNG_IMAGE, Flag.EXAMPLES))
        check_distinct_outputs((option, path) for path, _, option in outputs)
        for path, kind, option in outputs:
            if path is not None:
                check_output(path, kind, option=option, overwrite=overwrite,
                             inputs=[(Flag.CHECKPOINT, ckpt), ("the data root", cfg.data_root)])
        spec = datasets.get(cfg.dataset)
        ev = spec.load_eval(cfg.data_root, cfg.split, split_dir=cfg.split_dir)
        results = evaluate_split(model, ev, protocol=spec.protocol, view=view, device=env.device,
                                 batch_size=cfg.batch_size, workers=cfg.workers,
                                 top_k=TOP_K if per_query is not None or examples is not None else 0, env=env)
        if not env.is_main:  # under torchrun, rank 0 alone writes
            return None
        report = EvalReport(cfg.dataset, cfg.split, ev, results.metrics)
        if per_query is not None:
            from s4g.retrieval.results import write_per_query_csv

            write_per_query_csv(per_query, ev, results, root=cfg.data_root)
            report.written.append(f"per-query results written to {per_query}")
        if examples is not None:
            from s4g.app.pictures import examples_picture, save_png
            from s4g.retrieval.results import pick_examples

            picked = pick_examples(results.rank, examples_count, examples_seed).tolist()
            save_png(examples, examples_picture(ev, results, picked, name=f"{cfg.dataset} {cfg.split}",
                                                seed=examples_seed, cell=examples_size))
            report.written.append(f"retrieval picture of {len(picked)} queries written to {examples}")
        save_json(out, marked({
            "checkpoint": str(ckpt), "dataset": cfg.dataset, "data_root": cfg.data_root,
            "split": cfg.split, "protocol": spec.protocol, "queries": len(ev.query_files),
            "references": len(ev.reference_files), "fov": cfg.fov, "random_heading": cfg.random_heading,
            "seed": seed, "metrics": report.metrics,
        }))
        report.written.append(f"metrics written to {out}")
        return report
    finally:
        D.teardown(env)


def mine_checkpoint(
    *, out: Path, checkpoint: Path | None, runs_dir: Path, device: str | None, dataset: str | None,
    data_root: Path | None, split_dir: str | None, k: int | None, lists: str | None, batch_size: int | None,
    workers: int | None, overwrite: bool, console: Console,
) -> str | None:
    """Mine each training class's `k` most similar other references under `checkpoint` and write
    them to `out` (.npz: neighbours (C, k) int64, reference_files relative to the data root,
    data_root, checkpoint); the line to print, or None on ranks > 0. `k` and `lists` default
    to the run's."""
    if k is not None and k < 1:
        raise UserInputError(f"{Flag.K} must be at least 1, got {k}")
    env = D.setup("auto" if device is None else device)
    try:
        ckpt, model, config, cfg = _open(env, checkpoint, runs_dir, console, dataset=dataset, data_root=data_root,
                                         split_dir=split_dir, batch_size=batch_size, workers=workers)
        check_output(out, MINED_FILE, option=Flag.OUT, overwrite=overwrite,
                     inputs=[(Flag.CHECKPOINT, ckpt), ("the data root", cfg.data_root)])
        if k is None:
            k = int(config.get("neighbour_range", 128))
        train = datasets.get(cfg.dataset).load_train(cfg.data_root, split_dir=cfg.split_dir)
        nb = mine_training_set(model, train, k=k, view=View(cfg.aerial_size, cfg.ground_size), device=env.device,
                               batch_size=cfg.batch_size, workers=cfg.workers, env=env,
                               lists=lists or str(config.get("lists", "s4g")))
        if not env.is_main:  # under torchrun, rank 0 alone writes
            return None
        # relative to the data root, as in the per-query CSV: the file stays valid when the data moves
        files = [os.path.relpath(f, cfg.data_root) for f in train.reference_files]
        save_npz(out, neighbours=nb, reference_files=np.array(files, dtype=str),
                 data_root=np.array(str(cfg.data_root)), checkpoint=np.array(str(ckpt)))
        return f"{nb.shape[0]} classes × {nb.shape[1]} neighbours written to {out}"
    finally:
        D.teardown(env)


def check_examples(count: int, size: int) -> None:
    """UserInputError unless the --examples picture of `count` rows of `size`-pixel tiles can
    be drawn and opened again: at most Pillow's MAX_IMAGE_PIXELS (about 89 megapixels)."""
    from PIL import Image

    from s4g.app.pictures import MAX_QUERY_ASPECT, grid_boxes

    def pixels(rows: int) -> int:
        (w, h), _ = grid_boxes(rows, TOP_K + 1, round(size * MAX_QUERY_ASPECT), size, 2)
        return w * h

    if not 32 <= size <= 1024:
        raise UserInputError(f"{Flag.EXAMPLES_SIZE} must be from 32 to 1024 pixels, got {size}")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:  # Pillow's check is off: a picture of any size opens again
        limit = pixels(max(count, 1))
    if count < 1 or pixels(count) > limit:
        most = (limit - pixels(0)) // (pixels(1) - pixels(0))
        raise UserInputError(
            f"{Flag.EXAMPLES_COUNT} must be from 1 to {most} at {Flag.EXAMPLES_SIZE} {size}, got {count}: the "
            f"picture stays under Pillow's limit of {limit / 1e6:.0f} megapixels, beyond which it takes a file "
            "for a decompression bomb")


def _open(env: D.DistEnv, checkpoint: Path | None, runs_dir: Path, console: Console,
          **given: Any) -> tuple[Path, Any, dict[str, Any], InferenceConfig]:
    """(checkpoint path, model, saved config, InferenceConfig) for eval and mine."""
    if checkpoint is None:
        checkpoint = latest_checkpoint(runs_dir)
        if env.is_main:
            console.print(f"using {checkpoint} (best.pt of the newest run under {runs_dir})")
    model, config = load_checkpoint(checkpoint)
    cfg = inference_config(config, str(checkpoint), **given)
    model.check_image_size(*cfg.ground_size, Flag.GROUND_SIZE)  # a ViT's patch must tile the images
    model.check_image_size(cfg.aerial_size, cfg.aerial_size, Flag.AERIAL_SIZE)
    return checkpoint, model, config, cfg


__all__ = ["METRICS_FILE", "MINED_FILE", "EvalReport", "check_examples", "default_metrics_path",
           "evaluate_checkpoint", "mine_checkpoint"]
