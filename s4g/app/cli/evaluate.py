"""`s4g eval` and `s4g mine`: a checkpoint's metrics on a split, and its DSS neighbour lists.

Both run on several GPUs under torchrun (`torchrun --nproc-per-node N $(which s4g) eval ...`):
every process embeds a share of the images, rank 0 scores them, prints and writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from s4g.app.cli.app import LISTS_HELP, DatasetName, command, console, dataset_name, require_paths
from s4g.errors import UserInputError, check_seed
from s4g.fileio import (
    PNG_IMAGE,
    check_distinct_outputs,
    check_output,
    json_kind,
    npz_kind,
)

_CKPT_HELP = "s4g checkpoint (default: best.pt of the newest run under --runs-dir)."
_FROM_CKPT = "Default: the checkpoint's run config."
_OVERWRITE_HELP = "Replace existing output files of the same kinds."
METRICS_FILE = json_kind("an s4g eval metrics file", "checkpoint", "metrics")
MINED_FILE = npz_kind("an s4g mine neighbour file", "neighbours", "reference_files")


def default_metrics_path(checkpoint: Path, dataset: str, split: str, fov: float | None, random_heading: bool,
                         seed: int) -> Path:
    """eval-<dataset>-<split>[-fov<deg>-north | -fov<deg>-random-seed<seed>].json beside the
    checkpoint: evaluations of other views of the same split never share a file."""
    view = "" if fov is None else f"-fov{fov:g}-" + (f"random-seed{seed}" if random_heading else "north")
    return checkpoint.parent / f"eval-{dataset}-{split}{view}.json"


def _inputs(ctx: typer.Context, checkpoint: Optional[Path], runs_dir: Path, device: Optional[str], **given):
    """(checkpoint path, model, saved config, InferenceConfig, DistEnv) for eval, mine.

    Under torchrun the process joins the group (and leaves it when the command ends) and
    uses its local rank's GPU; without torchrun the DistEnv is a single process."""
    from s4g import distributed as D
    from s4g.app.jobs.inference import inference_config, latest_checkpoint
    from s4g.model.checkpoint import load_checkpoint

    env = D.setup("auto" if device is None else device)
    ctx.call_on_close(lambda: D.teardown(env))
    if checkpoint is None:
        checkpoint = latest_checkpoint(runs_dir)
        if env.is_main:
            console.print(f"using {checkpoint} (best.pt of the newest run under {runs_dir})")
    model, config = load_checkpoint(checkpoint)
    cfg = inference_config(config, str(checkpoint), **given)
    model.check_image_size(*cfg.ground_size, "--ground-size")  # a ViT's patch must tile the images
    model.check_image_size(cfg.aerial_size, cfg.aerial_size, "--aerial-size")
    return checkpoint, model, config, cfg, env


@command("eval")
def eval_command(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[Path], typer.Option(help=_CKPT_HELP)] = None,
    dataset: Annotated[Optional[DatasetName], typer.Option(help=f"Benchmark to evaluate on. {_FROM_CKPT}")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help=f"Dataset folder. {_FROM_CKPT}")] = None,
    split: Annotated[Optional[str], typer.Option(help="Evaluation split. Default: the run's eval split.")] = None,
    split_dir: Annotated[Optional[str], typer.Option(help=f"Folder of split files. {_FROM_CKPT}")] = None,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Metrics JSON (default: eval-<dataset>-<split>[-fov<deg>-<heading>].json beside the checkpoint).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=_OVERWRITE_HELP)] = False,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Images per forward pass. {_FROM_CKPT}")] = None,
    workers: Annotated[Optional[int], typer.Option(help=f"DataLoader worker processes. {_FROM_CKPT}")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
    fov: Annotated[Optional[float], typer.Option(help="Cut queries to this horizontal field of view, degrees.")] = None,
    random_heading: Annotated[
        Optional[bool], typer.Option(help="With --fov: a random heading per query. Default: the run's setting.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random headings.")] = 0,
    runs_dir: Annotated[Path, typer.Option(help="Where runs live (for the default checkpoint).")] = Path("runs"),
    per_query: Annotated[Optional[Path], typer.Option(
        help="Also write one CSV row per query: query, true reference, rank (0 = found first), top-5 "
             "references and scores, error in metres, query lat/lon; files relative to the data root.")] = None,
    examples: Annotated[Optional[Path], typer.Option(
        help="Also draw a PNG: rows of query → top-5 references, true ones framed green, others "
             "vermillion; half the rows found first, half not.")] = None,
    examples_count: Annotated[int, typer.Option(help="Rows of the --examples picture (at most 372 at the default size: the picture stays under 89 megapixels).")] = 8,
    examples_seed: Annotated[int, typer.Option(help="Seed that draws the --examples rows.")] = 0,
    examples_size: Annotated[int, typer.Option(help="Side of each tile in the --examples picture, pixels (32 to 1024).")] = 128,
    aerial_size: Annotated[Optional[int], typer.Option(help=f"Aerial tile side fed to the model, pixels. {_FROM_CKPT}")] = None,
    ground_size: Annotated[Optional[tuple[int, int]], typer.Option(metavar="H W", help=f"Height and width of the ground image fed to the model, pixels. {_FROM_CKPT}")] = None,
) -> None:
    """Retrieval metrics of a checkpoint: R@1, R@5, R@10, R@1% (+ hit rate, AP where defined),
    and the localisation error in metres where the dataset knows positions.

    Several GPUs: torchrun --nproc-per-node N $(which s4g) eval ...
    """
    dataset = dataset_name(dataset)
    require_paths(("--checkpoint", checkpoint), ("--data-root", data_root))
    from s4g.app.jobs.inference import evaluate_split
    from s4g.data import registry as datasets
    from s4g.fileio import marked, save_json
    from s4g.pipeline.transforms import check_fov
    from s4g.retrieval.results import PER_QUERY_FILE, TOP_K

    check_fov(fov)
    check_seed("--seed", seed)
    check_seed("--examples-seed", examples_seed)
    _check_examples(examples_count, examples_size)

    ckpt, model, _, cfg, env = _inputs(
        ctx, checkpoint, runs_dir, device, dataset=dataset, data_root=data_root, split=split,
        split_dir=split_dir, batch_size=batch_size, workers=workers, fov=fov,
        random_heading=random_heading, aerial_size=aerial_size, ground_size=ground_size,
    )
    out = json_out or default_metrics_path(ckpt, cfg.dataset, cfg.split, cfg.fov, cfg.random_heading, seed)
    outputs = ((out, METRICS_FILE, "--json" if json_out else "the default --json"),
               (per_query, PER_QUERY_FILE, "--per-query"), (examples, PNG_IMAGE, "--examples"))
    check_distinct_outputs((option, path) for path, _, option in outputs)
    for path, kind, option in outputs:
        if path is not None:
            check_output(path, kind, option=option, overwrite=overwrite,
                         inputs=[("--checkpoint", ckpt), ("the data root", cfg.data_root)])
    spec = datasets.get(cfg.dataset)
    ev = spec.load_eval(cfg.data_root, cfg.split, split_dir=cfg.split_dir)
    results = evaluate_split(model, ev, protocol=spec.protocol, aerial_size=cfg.aerial_size,
                             ground_size=cfg.ground_size, device=env.device, batch_size=cfg.batch_size,
                             workers=cfg.workers, fov=cfg.fov, random_heading=cfg.random_heading, seed=seed,
                             top_k=TOP_K if per_query is not None or examples is not None else 0, env=env)
    if not env.is_main:  # under torchrun, rank 0 alone prints and writes
        return
    metrics = results.metrics
    console.print(f"{cfg.dataset} {cfg.split}: {len(ev.query_files)} queries, {len(ev.reference_files)} references")
    _print_metrics(ev, metrics)
    if per_query is not None:
        from s4g.retrieval.results import write_per_query_csv

        write_per_query_csv(per_query, ev, results, root=cfg.data_root)
        console.print(f"per-query results written to {per_query}")
    if examples is not None:
        from s4g.app.pictures import examples_picture, save_png
        from s4g.retrieval.results import pick_examples

        picked = pick_examples(results.rank, examples_count, examples_seed)
        save_png(examples, examples_picture(ev, results, picked, name=f"{cfg.dataset} {cfg.split}",
                                            seed=examples_seed, cell=examples_size))
        console.print(f"retrieval picture of {len(picked)} queries written to {examples}")
    save_json(out, marked({
        "checkpoint": str(ckpt), "dataset": cfg.dataset, "data_root": cfg.data_root,
        "split": cfg.split, "protocol": spec.protocol, "queries": len(ev.query_files),
        "references": len(ev.reference_files), "fov": cfg.fov, "random_heading": cfg.random_heading,
        "seed": seed, "metrics": metrics,
    }))
    console.print(f"metrics written to {out}")


def _check_examples(count: int, size: int) -> None:
    """UserInputError unless the --examples picture of `count` rows of `size`-pixel tiles can
    be drawn and opened again: at most Pillow's MAX_IMAGE_PIXELS (about 89 megapixels)."""
    from PIL import Image

    from s4g.app.pictures import MAX_QUERY_ASPECT, grid_boxes
    from s4g.retrieval.results import TOP_K

    def pixels(rows: int) -> int:
        (w, h), _ = grid_boxes(rows, TOP_K + 1, round(size * MAX_QUERY_ASPECT), size, 2)
        return w * h

    if not 32 <= size <= 1024:
        raise UserInputError(f"--examples-size must be from 32 to 1024 pixels, got {size}")
    if count < 1 or pixels(count) > Image.MAX_IMAGE_PIXELS:
        most = (Image.MAX_IMAGE_PIXELS - pixels(0)) // (pixels(1) - pixels(0))
        raise UserInputError(
            f"--examples-count must be from 1 to {most} at --examples-size {size}, got {count}: the picture stays "
            f"under Pillow's limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, beyond which it takes a file "
            "for a decompression bomb")


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
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output .npz: neighbours (C, k) int64, reference_files (relative to data_root), data_root.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help=_CKPT_HELP)] = None,
    dataset: Annotated[Optional[DatasetName], typer.Option(help=f"Training set to mine. {_FROM_CKPT}")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help=f"Dataset folder. {_FROM_CKPT}")] = None,
    split_dir: Annotated[Optional[str], typer.Option(help=f"Folder of split files. {_FROM_CKPT}")] = None,
    k: Annotated[Optional[int], typer.Option(help="Neighbours per class (default: the run's neighbour range, 128).")] = None,
    lists: Annotated[Optional[str], typer.Option(metavar="s4g|released", help=LISTS_HELP + " Default: the run's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Images per forward pass. {_FROM_CKPT}")] = None,
    workers: Annotated[Optional[int], typer.Option(help=f"DataLoader worker processes. {_FROM_CKPT}")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs live (for the default checkpoint).")] = Path("runs"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help=_OVERWRITE_HELP)] = False,
) -> None:
    """Hard negatives for DSS: each class's k most similar other references under a model.

    Several GPUs: torchrun --nproc-per-node N $(which s4g) mine ...
    """
    dataset = dataset_name(dataset)
    require_paths(("--checkpoint", checkpoint), ("--data-root", data_root))
    import os

    import numpy as np

    from s4g.app.jobs.inference import mine_training_set
    from s4g.data import registry as datasets
    from s4g.fileio import save_npz

    if k is not None and k < 1:
        raise UserInputError(f"--k must be at least 1, got {k}")
    ckpt, model, config, cfg, env = _inputs(
        ctx, checkpoint, runs_dir, device, dataset=dataset, data_root=data_root, split_dir=split_dir,
        batch_size=batch_size, workers=workers,
    )
    check_output(out, MINED_FILE, option="--out", overwrite=overwrite,
                 inputs=[("--checkpoint", ckpt), ("the data root", cfg.data_root)])
    if k is None:
        k = int(config.get("neighbour_range", 128))
    train = datasets.get(cfg.dataset).load_train(cfg.data_root, split_dir=cfg.split_dir)
    nb = mine_training_set(model, train, k=k, aerial_size=cfg.aerial_size, ground_size=cfg.ground_size,
                           device=env.device, batch_size=cfg.batch_size, workers=cfg.workers, env=env,
                           lists=lists or str(config.get("lists", "s4g")))
    if not env.is_main:  # under torchrun, rank 0 alone writes
        return
    # relative to the data root, as in the per-query CSV: the file stays valid when the data moves
    files = [os.path.relpath(f, cfg.data_root) for f in train.reference_files]
    save_npz(out, neighbours=nb, reference_files=np.array(files, dtype=str), data_root=np.array(str(cfg.data_root)),
             checkpoint=np.array(str(ckpt)))
    console.print(f"{nb.shape[0]} classes × {nb.shape[1]} neighbours written to {out}")
