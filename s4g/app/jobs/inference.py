"""What `s4g eval` and `s4g mine` do, and the same steps training runs at each evaluation.

A model and a dataset split in, numbers out: `evaluate_split` embeds an EvalSet and scores
it under its dataset's protocol; `mine_training_set` embeds a TrainSet and returns each
class's hardest other classes (DSS). `inference_config` merges the command line over a
checkpoint's saved configuration; `latest_checkpoint` finds the newest run's best.pt.

Under torchrun (an `env`) every rank embeds a share of the images, rank 0 scores the gathered
embeddings, and every rank returns rank 0's result: exactly one process's (the same batches
give the same embeddings, and the same scoring code runs on them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s4g import distributed as D
from s4g.config import InferenceConfig, TrainConfig
from s4g.data import registry as datasets
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError
from s4g.flags import Flag
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_eval_set, embed_files
from s4g.retrieval.mining import class_query_embeddings, similar_references
from s4g.retrieval.released import check_lists, last_query_embeddings
from s4g.retrieval.results import SplitResults, split_results

_RUN_NAME = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


def latest_checkpoint(runs_dir: str | Path = "runs") -> Path:
    """best.pt of the most recent run under runs_dir (runs/<dataset>-<YYYYmmdd-HHMMSS>[-n]/).

    Newest by the time stamp in the folder name (then its -n suffix, then mtime); folders
    named otherwise rank by mtime alone, after stamped ones. UserInputError if none has best.pt.
    """
    runs = Path(runs_dir)
    found = []
    for run in runs.iterdir() if runs.is_dir() else ():
        if (run / "best.pt").is_file():
            m = _RUN_NAME.search(run.name)
            key = (m.group(1), int(m.group(2) or 0)) if m else ("", 0)
            found.append((key, (run / "best.pt").stat().st_mtime, run / "best.pt"))
    if not found:
        raise UserInputError(
            f"no {Flag.CHECKPOINT} given and no run with best.pt under {runs.resolve()}; pass "
            f"{Flag.CHECKPOINT} CKPT or run `s4g train` first"
        )
    return max(found)[2]


def inference_config(config: Mapping[str, Any], source: str, **given: Any) -> InferenceConfig:
    """Command-line values (`given`, None = not given) over a checkpoint's saved config.

    With a --dataset other than the checkpoint's, the image sizes and split come from that
    dataset's preset. An inference batch is --batch-size, else the run's evaluation batch,
    else its training batch. UserInputError names what is missing or invalid.
    """
    given = {k: v for k, v in given.items() if v is not None}
    dataset = given.get("dataset", config.get("dataset"))
    if dataset is None:
        raise UserInputError(f"{source} names no dataset in its config; pass {Flag.DATASET} NAME")
    spec = datasets.get(dataset)
    base = dict(config)
    if dataset != config.get("dataset"):
        p = spec.preset
        base = {"aerial_size": p.aerial_size, "ground_size": p.ground_size, "eval_split": p.eval_split,
                "batch_size": config.get("batch_size", 64)}
    merged = {**base, **given}
    for key in ("aerial_size", "ground_size"):
        if key not in merged:
            raise UserInputError(f"{source}: its config has no {key!r}; it is not an s4g training checkpoint")
    batch = int(given.get("batch_size", merged.get("eval_batch_size", merged.get("batch_size", 64))))
    workers = int(merged.get("workers", 0))
    if batch < 1 or workers < 0:
        raise UserInputError(
            f"{Flag.BATCH_SIZE} must be at least 1 and {Flag.WORKERS} at least 0, got {batch} and {workers}")
    ground_h, ground_w = (int(v) for v in merged["ground_size"])
    return InferenceConfig(
        dataset=dataset,
        data_root=str(spec.data_root(merged.get("data_root"),
                                     locations=int(merged.get("synth_locations", TrainConfig.synth_locations)),
                                     seed=int(merged.get("synth_seed", TrainConfig.synth_seed)))),
        split_dir=str(merged.get("split_dir", "splits")),
        split=spec.check_split(merged.get("split", merged.get("eval_split"))),
        aerial_size=int(merged["aerial_size"]),
        ground_size=(ground_h, ground_w),
        batch_size=batch,
        workers=workers,
        fov=merged.get("fov"),
        random_heading=bool(merged.get("random_heading", False)),
    )


def evaluate_split(
    model: torch.nn.Module,
    eval_set: EvalSet,
    *,
    protocol: str,
    view: View,
    device: torch.device,
    batch_size: int,
    workers: int = 0,
    progress: bool = True,
    top_k: int = 0,
    env: D.DistEnv | None = None,
) -> SplitResults:
    """Retrieval metrics (percent) of `model` on an EvalSet, counted as `protocol` counts them,
    with the localisation error in metres where positions are known, and per-query results
    (s4g.retrieval.results.SplitResults).

    view: the sizes and the panorama queries' field of view (s4g.pipeline.transforms.View;
    s4g.retrieval.embed.embed_eval_set). top_k > 0 also lists
    each query's top_k references (results.top, for the per-query CSV and pictures).
    env: a torchrun process group to share the embedding with (call on every rank; all
    return rank 0's results).
    """
    was_training = model.training
    q, r = embed_eval_set(model, eval_set, view, device=device, batch_size=batch_size, workers=workers,
                          progress=progress, env=env)
    model.train(was_training)

    def results() -> SplitResults:
        assert q is not None and r is not None  # rank 0's, where main_result calls this
        return split_results(q, r, eval_set, protocol=protocol, device=device, k=top_k)

    return D.main_result(env, results)


def shown_metrics(eval_set: EvalSet, metrics: Mapping[str, float]) -> list[str]:
    """The metric names reported for a benchmark: R@1/5/10/1%, + hit rate when it has
    semi-positives (VIGOR), + AP for drone/satellite retrieval (University-1652)."""
    names = [k for k in ("R@1", "R@5", "R@10", "R@1%") if k in metrics]
    if eval_set.semi_positives is not None:
        names.append("hit_rate")
    if "drone" in (eval_set.query_kind, eval_set.reference_kind):
        names.append("AP")
    return names


def mine_training_set(
    model: torch.nn.Module,
    train_set: TrainSet,
    *,
    k: int,
    view: View,
    device: torch.device,
    batch_size: int,
    workers: int = 0,
    progress: bool = True,
    block: tuple[int, int] | None = None,
    env: D.DistEnv | None = None,
    lists: str = "s4g",
) -> np.ndarray:
    """DSS neighbour lists: for each class, its k most similar *other* references.

    Embeds the TrainSet's queries and references with the evaluation transform, whole: at the
    sizes of `view` (s4g.pipeline.transforms.View) without its field-of-view cut. Scores each
    class's query embedding (mining.class_query_embeddings: the normalised mean of its
    queries) against every reference, and excludes the class's own reference.
    -> (C, k) int64 class ids, hardest first, ties by lower id: the `neighbours` argument of
       s4g.sampling.pack_batches. k must be < C (UserInputError naming --k otherwise).
    env: a torchrun process group to share the embedding with (call on every rank; all
    return the lists). The top-k runs on rank 0 alone: a small share of the mining time, the
    embedding being the rest (benches/bench_dist_eval.py measures both).
    lists: "s4g", or "released": a class is scored by its last query's embedding
      (s4g.retrieval.released.last_query_embeddings), as the released code does.
    """
    check_lists(lists)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < train_set.num_classes:
        raise UserInputError(
            f"{Flag.K} must be between 1 and {train_set.num_classes - 1} (the training set has "
            f"{train_set.num_classes} references), got {k!r}"
        )
    was_training = model.training
    common: dict[str, Any] = dict(device=device, batch_size=batch_size, workers=workers, progress=progress, env=env)
    whole = view.whole()
    q = embed_files(model, train_set.query_files, whole, train_set.query_kind, label="training queries", **common)
    r = embed_files(model, train_set.reference_files, whole, "aerial", label="training references", **common)
    model.train(was_training)

    def nearest() -> np.ndarray:
        assert q is not None and r is not None  # rank 0's, where main_result calls this
        pair_class = np.asarray(train_set.pair_class, dtype=np.int64)
        by = last_query_embeddings if lists == "released" else class_query_embeddings
        cls_q = by(q, pair_class, r)
        exclude = np.arange(train_set.num_classes, dtype=np.int64)
        return similar_references(cls_q, r, int(k), exclude, device=device, block=block)

    return D.main_result(env, nearest)


__all__ = ["evaluate_split", "inference_config", "latest_checkpoint", "mine_training_set", "shown_metrics"]
