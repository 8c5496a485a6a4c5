"""The training run: validate -> load -> build -> (evaluate) -> epochs of pack, train,
evaluate, re-mine, checkpoint.

`run(cfg)` trains one run directory (config.json, metrics.jsonl, last.pt, best.pt). Under
torchrun every rank walks the same global batches and takes its own slice of each; every rank
embeds its share of the images at each evaluation and mining, rank 0 scores them; rank 0
alone writes files and shows progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from s4g import distributed as D
from s4g.app.jobs.inference import evaluate_split, mine_training_set
from s4g.app.jobs.train import schedule
from s4g.app.jobs.train.checks import check_config
from s4g.app.jobs.train.data import (
    RunData,
    epoch_batches,
    epoch_neighbours,
    load_run_data,
    main_process_checks,
    run_dir_for,
)
from s4g.app.jobs.train.state import MetricsLog, RunState, save_run_checkpoint, set_rng_state
from s4g.app.jobs.train.step import Parts, build_parts, train_one_epoch
from s4g.app.rundir import claim_run_dir
from s4g.config import TrainConfig
from s4g.data import registry as datasets
from s4g.data.registry import DatasetSpec
from s4g.errors import UserInputError
from s4g.fileio import marked, save_json
from s4g.flags import Flag
from s4g.model.checkpoint import read_checkpoint
from s4g.pipeline.dataset import collate_pairs

# Keys that must agree between a checkpoint and the run resuming from it.
RESUME_KEYS = ("dataset", "backbone", "batch_size", "aerial_size", "ground_size")
# In a run folder that torchrun may restart: the run id of the torchrun job writing the run.
ELASTIC_MARK = ".s4g-torchrun.json"


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """A run checkpoint to continue from: its path and its content (read once)."""

    path: Path
    checkpoint: dict[str, Any]

    @classmethod
    def read(cls, resume: str | Path) -> ResumePoint:
        """The checkpoint --resume names: a file, or a run directory's last.pt, verified and
        holding a run's state (UserInputError naming what is missing otherwise)."""
        path = Path(resume)
        if path.is_dir() and not (path / "last.pt").is_file():
            if (path / "config.json").is_file():
                raise UserInputError(
                    f"{Flag.RESUME} {path}: the run stopped before its first checkpoint (last.pt is written at the "
                    f"end of epoch 1), so there is nothing to continue; start it again with the same options "
                    f"and {Flag.OUT} {path} {Flag.OVERWRITE}"
                )
            raise UserInputError(f"{Flag.RESUME} {path}: no s4g training run here (no last.pt, no config.json)")
        path = path / "last.pt" if path.is_dir() else path
        if not path.exists():
            raise UserInputError(f"{Flag.RESUME} {path}: no such run folder or checkpoint")
        return cls(path, read_checkpoint(path, run_state=True))


def run(
    cfg: TrainConfig,
    *,
    resume: ResumePoint | str | Path | None = None,
    overwrite: bool = False,
    stop_after_epoch: int | None = None,
    console: Console | None = None,
) -> Path:
    """Train per `cfg`; return the run directory.

    resume: a ResumePoint, or a run directory / checkpoint path, to continue from (same
      dataset, backbone, batch size and image sizes), restoring weights, optimizer, scaler,
      step, sampler state and RNG.
    overwrite: start a new run in an --out that holds one, moving its files aside
      (s4g.app.rundir); the run folder is locked against other processes either way.
    stop_after_epoch: end after that epoch as if interrupted (resume tests, time limits).
    Under `torchrun --max-restarts N` (which needs --out), a group torchrun restarts after a
    failure continues its own run from the folder's last.pt without `resume`.
    Raises UserInputError for anything the user can fix, including a GPU out of memory.
    """
    spec = datasets.get(cfg.dataset)
    env = D.setup(cfg.device)
    try:
        check_config(cfg, spec, env.world_size)
        if resume is not None and not isinstance(resume, ResumePoint):
            resume = ResumePoint.read(resume)
        console = console or Console()
        resume, overwrite = _elastic_restart(cfg, env, resume, overwrite, console)
        with contextlib.ExitStack() as held:
            def claim(out: Path) -> Path:  # the run folder stays locked until the run ends
                return held.enter_context(claim_run_dir(
                    out, resume_from=None if resume is None else resume.path, overwrite=overwrite, console=console,
                    data_root=cfg.data_root))

            with D.failures_named(env):
                return _run(cfg, spec, env, resume, stop_after_epoch, console, claim)
    except torch.OutOfMemoryError:
        if cfg.chunk_size == 0:
            fix = f"train the same batch in chunks with {Flag.CHUNK_SIZE} auto (or N pairs; the same gradients)"
        elif cfg.chunk_size == "auto":
            fix = f"pass a {Flag.CHUNK_SIZE} N below the one auto chose (printed at the start)"
        else:
            fix = f"pass a {Flag.CHUNK_SIZE} below {cfg.chunk_size}"
        raise UserInputError(
            f"the GPU ran out of memory at {Flag.BATCH_SIZE} {cfg.batch_size} "
            f"({cfg.batch_size // env.world_size} pairs per process, images "
            f"{cfg.aerial_size}px aerial, {cfg.ground_size[0]}x{cfg.ground_size[1]} ground); "
            f"{fix}, lower {Flag.BATCH_SIZE}, or spread the batch over more GPUs with torchrun"
        ) from None
    finally:
        D.teardown(env)


def _elastic_restart(cfg: TrainConfig, env: D.DistEnv, resume: ResumePoint | None, overwrite: bool,
                     console: Console) -> tuple[ResumePoint | None, bool]:
    """(resume, overwrite) for this attempt of a run that torchrun may restart (--max-restarts).

    A restarted group continues its own run: from the run folder's last.pt, or from the start
    when the run had not written one yet. "Its own" = the folder's ELASTIC_MARK names this
    torchrun job's run id, so a restart never continues another job's run in the same --out.
    """
    job = D.elastic()
    if job is None:
        return resume, overwrite
    folder = cfg.out if cfg.out is not None else (None if resume is None else resume.path.parent)
    if folder is None:
        raise UserInputError(
            f"torchrun --max-restarts {job.max_restarts}: give {Flag.OUT}, the run folder a restarted group "
            "continues in")
    if job.run_id in ("", "none"):
        if env.is_main and job.restarts == 0:
            console.print("[yellow]note:[/] torchrun --max-restarts without --rdzv-id: a restarted group could "
                          f"not tell this run from another in the same {Flag.OUT}, so it will start over instead of "
                          "continuing; give --rdzv-id (e.g. the Slurm job id)", soft_wrap=True)
        return resume, overwrite
    if job.restarts == 0:
        return resume, overwrite
    folder = Path(folder).expanduser().resolve()

    def own_run() -> str | None:
        try:
            mark = json.loads((folder / ELASTIC_MARK).read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            return None
        if mark != job.run_id:
            return None
        return "continue" if (folder / "last.pt").is_file() else "start over"

    found = D.main_result(env, own_run)
    if found == "continue":
        point = ResumePoint.read(folder)
        if env.is_main:
            console.print(f"torchrun restart {job.restarts}: continuing from {point.path} "
                          f"(epoch {point.checkpoint['epoch']})", soft_wrap=True)
        return point, False
    if found == "start over":
        if env.is_main:
            console.print(f"torchrun restart {job.restarts}: no checkpoint yet in {folder}; starting the run again",
                          soft_wrap=True)
        return resume, True
    return resume, overwrite


def _check_resume(cfg: TrainConfig, resume: ResumePoint) -> None:
    mine, saved = cfg.to_json(), resume.checkpoint.get("config", {})
    diff = [f"{key}: {saved.get(key)!r} in the checkpoint vs {mine.get(key)!r} now"
            for key in RESUME_KEYS if mine.get(key) != saved.get(key)]
    if diff:
        raise UserInputError(
            f"{Flag.RESUME} {resume.path}: the checkpoint is from another configuration (" + "; ".join(diff) + ")"
        )


def _prepare(cfg: TrainConfig, spec: DatasetSpec, env: D.DistEnv, resume: ResumePoint | None,
             claim: Callable[[Path], Path]) -> TrainConfig:
    """cfg with its run folder claimed and an absolute data root (rank 0 does both), the same
    on every rank. The folder comes first: a refused --out costs no data preparation."""
    if resume is not None:
        _check_resume(cfg, resume)
        if cfg.out is None:
            cfg = dataclasses.replace(cfg, out=str(resume.path.parent))
    out = D.main_result(env, lambda: str(claim(run_dir_for(cfg))))
    # Per node, not once for all: each node may have its own cache folder (and /tmp), where
    # the synthetic world is written; a world in a shared folder is written safely by several
    # nodes at once (s4g.app.synth.cache).
    root = D.node_first(env, lambda: str(spec.data_root(cfg.data_root, locations=cfg.synth_locations,
                                                        seed=cfg.synth_seed)))
    return dataclasses.replace(cfg, data_root=root, out=out)


def _run(cfg: TrainConfig, spec: DatasetSpec, env: D.DistEnv, resume: ResumePoint | None, stop: int | None,
         console: Console, claim: Callable[[Path], Path]) -> Path:
    cfg = _prepare(cfg, spec, env, resume, claim)
    assert cfg.out is not None  # _prepare names the run folder
    out = Path(cfg.out)
    data = load_run_data(cfg, spec, with_eval=True)
    # one process reads the images' headers for all; a bad image stops every rank
    data.baseline = D.main_result(env, lambda: main_process_checks(cfg, spec, data))
    # Epoch 1's packing sizes the learning-rate schedule (and proves a batch can be packed).
    first = epoch_batches(cfg, data, epoch_neighbours(cfg, data, None)[0], 1)
    steps_per_epoch = len(first[0])
    ckpt = resume.checkpoint if resume is not None else None
    parts, state = build_parts(cfg, env, ckpt, ground_hw=data.pairs.ground_size)
    if resume is not None and env.is_main:
        console.print(f"resuming {resume.path}: epoch {state.epoch} of {cfg.epochs} done, continuing with epoch "
                      f"{state.epoch + 1}", soft_wrap=True)
    logs: list[MetricsLog] = []

    def open_log() -> None:
        out.mkdir(parents=True, exist_ok=True)
        # The log first: a damaged metrics.jsonl refuses the resume before config.json changes.
        logs.append(MetricsLog(out / "metrics.jsonl", keep_upto_epoch=state.epoch if ckpt else None))
        save_json(out / "config.json", marked(cfg.to_json()))  # the mark tells s4g's runs apart
        job = D.elastic()
        if job is not None:
            save_json(out / ELASTIC_MARK, {"run_id": job.run_id})

    D.main_result(env, open_log)  # rank 0's refusal is raised on every rank, none waits for it
    log = logs[0] if logs else None
    if log is not None:
        if parts.chunk_note is not None:
            console.print(parts.chunk_note)
            log.add({"epoch": state.epoch + 1, "kind": "chunking", "chunk_size": parts.chunk,
                     "note": parts.chunk_note})
        if ckpt is None:
            _baseline(data, log, console)
    start_r1 = None if ckpt is not None else _evaluate(parts, data, cfg, spec, env, log, console, epoch=0)
    D.barrier(env)

    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if ckpt is not None and epoch == state.epoch + 1:
            set_rng_state(ckpt["rng"])
        neighbours, source = epoch_neighbours(cfg, data, state.mined)
        batches, stats = first if epoch == 1 else epoch_batches(cfg, data, neighbours, epoch)
        if log is not None:
            n = data.train.num_pairs
            log.add({"epoch": epoch, "kind": "sampling", "neighbours": source, "batches": len(batches),
                     "pairs_placed": batches.size / n, "via_neighbour": stats["via_neighbour"] / n})
        loader = _loader(cfg, data, batches, epoch, env)
        state.step = train_one_epoch(parts, loader, env, cfg, epoch=epoch, step=state.step,
                                     steps_per_epoch=steps_per_epoch, log=log, console=console)
        state.epoch = epoch
        _after_epoch(cfg, spec, data, env, parts, state, log, console)
        if stop is not None and epoch >= stop:
            break
    if env.is_main and state.best_r1 >= 0:
        base = f" (colour-histogram baseline {data.baseline['R@1']:.2f})" if data.baseline else ""
        best = f"best {cfg.eval_split} R@1 {state.best_r1:.2f}"
        if start_r1 is not None and start_r1 > state.best_r1:  # best.pt holds trained epochs only
            best = (f"best {cfg.eval_split} R@1 {start_r1:.2f} at epoch 0, before training; the best trained "
                    f"epoch's (best.pt) {state.best_r1:.2f}")
        console.print(f"{best}{base}; checkpoints in {out}")
    return out


def _loader(cfg: TrainConfig, data: RunData, batches: np.ndarray, epoch: int, env: D.DistEnv) -> DataLoader:
    share = D.rank_share(batches, env)
    # Augmentation is a pure function of (seed, epoch, pair index): no worker or RNG state
    # leaks into it, so a resumed epoch sees the same images as an uninterrupted one.
    data.pairs.set_epoch(epoch)
    return DataLoader(data.pairs, batch_sampler=share.tolist(), num_workers=cfg.workers,
                      pin_memory=env.device.type == "cuda", collate_fn=collate_pairs)


def _after_epoch(cfg: TrainConfig, spec: DatasetSpec, data: RunData, env: D.DistEnv, parts: Parts,
                 state: RunState, log: MetricsLog | None, console: Console) -> None:
    """Evaluate, re-mine and checkpoint as the schedule says (every rank embeds its share)."""
    improved = False
    if schedule.evaluates_after(state.epoch, cfg.epochs, cfg.eval_every):
        r1 = _evaluate(parts, data, cfg, spec, env, log, console, epoch=state.epoch)
        improved = r1 > state.best_r1
        state.best_r1 = max(r1, state.best_r1)
    if schedule.SamplingPolicy.of(cfg).mines_after(state.epoch):
        k = min(cfg.neighbour_range, data.train.num_classes - 1)
        # the same lists on every rank (rank 0's top-k over the gathered embeddings)
        state.mined = mine_training_set(parts.model, data.train, k=k, view=data.pairs.view, device=env.device,
                                        batch_size=cfg.eval_batch_size, workers=cfg.workers, env=env,
                                        lists=cfg.lists)
    if env.is_main:
        assert cfg.out is not None  # _prepare names the run folder
        # after the mining: a run continued from best.pt trains on the lists this epoch mined
        if improved:
            save_run_checkpoint(Path(cfg.out) / "best.pt", cfg, parts, state)
        save_run_checkpoint(Path(cfg.out) / "last.pt", cfg, parts, state)
    D.barrier(env)


def _evaluate(parts: Parts, data: RunData, cfg: TrainConfig, spec: DatasetSpec, env: D.DistEnv,
              log: MetricsLog | None, console: Console, *, epoch: int) -> float:
    """Retrieval metrics on the eval split (every rank embeds a share), logged by rank 0;
    returns R@1 (percent) on every rank."""
    t0 = time.perf_counter()
    assert data.eval is not None  # load_run_data(with_eval=True)
    metrics = evaluate_split(parts.model, data.eval, protocol=spec.protocol, view=data.pairs.view,
                             device=env.device, batch_size=cfg.eval_batch_size, workers=cfg.workers,
                             progress=env.is_main, env=env).metrics
    if log is None:  # ranks other than 0
        return float(metrics["R@1"])
    log.add({"epoch": epoch, "kind": "eval", "split": cfg.eval_split, **metrics,
             "eval_s": round(time.perf_counter() - t0, 2)})
    shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    console.print(f"epoch {epoch}: {cfg.eval_split} {shown}")
    return float(metrics["R@1"])


def _baseline(data: RunData, log: MetricsLog, console: Console) -> None:
    """The colour-histogram R@1, logged so the model's numbers read honestly."""
    if data.baseline is None:
        return
    log.add({"epoch": 0, "kind": "colour_baseline", **data.baseline})
    console.print(f"colour-histogram baseline (no training): R@1 {data.baseline['R@1']:.2f}")


__all__ = ["ELASTIC_MARK", "RESUME_KEYS", "ResumePoint", "run"]
