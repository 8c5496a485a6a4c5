"""`s4g eval` and `s4g mine`: a checkpoint's metrics on a split, and its DSS neighbour lists.

Both run on several GPUs under torchrun (`torchrun --nproc-per-node N $(which s4g) eval ...`):
every process embeds a share of the images, rank 0 scores them, prints and writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from s4g.app.cli.app import command, console, require_paths
from s4g.app.cli.options import (
    DatasetName,
    Device,
    GroundSize,
    Lists,
    RunCheckpoint,
    RunsDir,
    ground_size_option,
    lists_option,
    value,
)
from s4g.flags import Flag

_FROM_CKPT = "Default: the checkpoint's run config."
_OVERWRITE_HELP = "Replace existing output files of the same kinds."


@command("eval")
def eval_command(
    checkpoint: RunCheckpoint = None,
    dataset: Annotated[DatasetName | None, typer.Option(
        Flag.DATASET, help=f"Benchmark to evaluate on. {_FROM_CKPT}")] = None,
    data_root: Annotated[Path | None, typer.Option(Flag.DATA_ROOT, help=f"Dataset folder. {_FROM_CKPT}")] = None,
    split: Annotated[str | None, typer.Option(
        Flag.SPLIT, help="Evaluation split. Default: the run's eval split.")] = None,
    split_dir: Annotated[str | None, typer.Option(Flag.SPLIT_DIR, help=f"Folder of split files. {_FROM_CKPT}")] = None,
    json_out: Annotated[
        Path | None, typer.Option(
            Flag.JSON,
            help="Metrics JSON (default: eval-<dataset>-<split>[-fov<deg>-<heading>].json beside the "
                 "checkpoint).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(Flag.OVERWRITE, help=_OVERWRITE_HELP)] = False,
    batch_size: Annotated[int | None, typer.Option(
        Flag.BATCH_SIZE, help=f"Images per forward pass. {_FROM_CKPT}")] = None,
    workers: Annotated[int | None, typer.Option(
        Flag.WORKERS, help=f"DataLoader worker processes. {_FROM_CKPT}")] = None,
    device: Device = None,
    fov: Annotated[float | None, typer.Option(
        Flag.FOV, help="Cut queries to this horizontal field of view, degrees.")] = None,
    random_heading: Annotated[
        bool | None, typer.Option(f"{Flag.RANDOM_HEADING}/{Flag.NO_RANDOM_HEADING}",
                                  help=f"With {Flag.FOV}: a random heading per query. Default: the run's setting.")
    ] = None,
    seed: Annotated[int, typer.Option(Flag.SEED, help="Seed of the random headings.")] = 0,
    runs_dir: RunsDir = Path("runs"),
    per_query: Annotated[Path | None, typer.Option(
        Flag.PER_QUERY,
        help="Also write one CSV row per query: query, true reference, rank (0 = found first), top-5 "
             "references and scores, error in metres, query lat/lon; files relative to the data root.")] = None,
    examples: Annotated[Path | None, typer.Option(
        Flag.EXAMPLES,
        help="Also draw a PNG: rows of query → top-5 references, true ones framed green, others "
             "vermillion; half the rows found first, half not.")] = None,
    examples_count: Annotated[int, typer.Option(
        Flag.EXAMPLES_COUNT,
        help=f"Rows of the {Flag.EXAMPLES} picture (at most 372 at the default size: the picture stays under 89 "
             "megapixels).")] = 8,
    examples_seed: Annotated[int, typer.Option(
        Flag.EXAMPLES_SEED, help=f"Seed that draws the {Flag.EXAMPLES} rows.")] = 0,
    examples_size: Annotated[int, typer.Option(
        Flag.EXAMPLES_SIZE, help=f"Side of each tile in the {Flag.EXAMPLES} picture, pixels (32 to 1024).")] = 128,
    aerial_size: Annotated[int | None, typer.Option(
        Flag.AERIAL_SIZE, help=f"Aerial tile side fed to the model, pixels. {_FROM_CKPT}")] = None,
    ground_size: Annotated[GroundSize, ground_size_option(_FROM_CKPT)] = None,
) -> None:
    """Retrieval metrics of a checkpoint: R@1, R@5, R@10, R@1% (+ hit rate, AP where defined),
    and the localisation error in metres where the dataset knows positions.

    Several GPUs: torchrun --nproc-per-node N $(which s4g) eval ...
    """
    require_paths((Flag.CHECKPOINT, checkpoint), (Flag.DATA_ROOT, data_root))
    from s4g.app.jobs.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(
        checkpoint=checkpoint, runs_dir=runs_dir, device=device, dataset=value(dataset), data_root=data_root,
        split=split, split_dir=split_dir, batch_size=batch_size, workers=workers, fov=fov,
        random_heading=random_heading, seed=seed, aerial_size=aerial_size, ground_size=ground_size,
        json_out=json_out, per_query=per_query, examples=examples, examples_count=examples_count,
        examples_seed=examples_seed, examples_size=examples_size, overwrite=overwrite, console=console)
    if report is None:  # under torchrun, rank 0 alone prints
        return
    ev = report.eval_set
    console.print(f"{report.dataset} {report.split}: {len(ev.query_files)} queries, "
                  f"{len(ev.reference_files)} references")
    _print_metrics(ev, report.metrics)
    for line in report.written:
        console.print(line)


def _print_metrics(ev, metrics: dict) -> None:
    """The retrieval metrics in one table, the localisation errors (when known) in another."""
    from rich.table import Table

    from s4g.app.jobs.inference import shown_metrics
    from s4g.retrieval.results import WITHIN_M, within_key

    table = Table()
    names = shown_metrics(ev, metrics)
    names += [n for n in ("AP",) if n in metrics and n not in names]  # as training prints it
    for name in names:
        table.add_column(name.replace("hit_rate", "hit rate"), justify="right")
    table.add_row(*(f"{metrics[n]:.2f}" for n in names))
    console.print(table)
    if "error_median_m" not in metrics:
        return
    table = Table(title="localisation error: query position → top-1 reference centre", title_justify="left")
    table.add_column("median m", justify="right")
    table.add_column("mean m", justify="right")
    for m in WITHIN_M:
        table.add_column(f"≤{m // 1000} km" if m % 1000 == 0 else f"≤{m} m", justify="right")
    table.add_row(f"{metrics['error_median_m']:.1f}", f"{metrics['error_mean_m']:.1f}",
                  *(f"{metrics[within_key(m)]:.2f} %" for m in WITHIN_M))
    console.print(table)


@command("mine")
def mine_command(
    out: Annotated[Path, typer.Option(
        Flag.OUT, help="Output .npz: neighbours (C, k) int64, reference_files (relative to data_root), data_root.")],
    checkpoint: RunCheckpoint = None,
    dataset: Annotated[DatasetName | None, typer.Option(
        Flag.DATASET, help=f"Training set to mine. {_FROM_CKPT}")] = None,
    data_root: Annotated[Path | None, typer.Option(Flag.DATA_ROOT, help=f"Dataset folder. {_FROM_CKPT}")] = None,
    split_dir: Annotated[str | None, typer.Option(Flag.SPLIT_DIR, help=f"Folder of split files. {_FROM_CKPT}")] = None,
    k: Annotated[int | None, typer.Option(
        Flag.K, help="Neighbours per class (default: the run's neighbour range, 128).")] = None,
    lists: Annotated[Lists | None, lists_option(" Default: the run's.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        Flag.BATCH_SIZE, help=f"Images per forward pass. {_FROM_CKPT}")] = None,
    workers: Annotated[int | None, typer.Option(
        Flag.WORKERS, help=f"DataLoader worker processes. {_FROM_CKPT}")] = None,
    device: Device = None,
    runs_dir: RunsDir = Path("runs"),
    overwrite: Annotated[bool, typer.Option(Flag.OVERWRITE, help=_OVERWRITE_HELP)] = False,
) -> None:
    """Hard negatives for DSS: each class's k most similar other references under a model.

    Several GPUs: torchrun --nproc-per-node N $(which s4g) mine ...
    """
    require_paths((Flag.CHECKPOINT, checkpoint), (Flag.DATA_ROOT, data_root))
    from s4g.app.jobs.evaluate import mine_checkpoint

    line = mine_checkpoint(
        out=out, checkpoint=checkpoint, runs_dir=runs_dir, device=device, dataset=value(dataset),
        data_root=data_root, split_dir=split_dir, k=k, lists=value(lists), batch_size=batch_size, workers=workers,
        overwrite=overwrite, console=console)
    if line is not None:  # under torchrun, rank 0 alone prints
        console.print(line)
