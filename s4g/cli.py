"""The `s4g` command line: parse options, build a config, call the library.

Every command is registered with `@command(...)`, which turns the errors a user can cause
(UserInputError / ValueError / OSError naming a file or option) into a one-paragraph message
and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

import s4g

app = typer.Typer(
    name="s4g",
    help="Sample4Geo cross-view geo-localisation: train, mine hard negatives, evaluate, locate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
console = Console()


def fail(message: str) -> typer.Exit:
    """Print `message` as an error paragraph; return the Exit(2) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code=2)


def command(*args, **kwargs) -> Callable:
    """app.command(...) whose user-caused errors end with a message and exit code 2."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except (ValueError, OSError) as err:
                raise fail(str(err)) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def _version(value: bool) -> None:
    if value:
        console.print(f"s4g {s4g.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Sample4Geo cross-view geo-localisation."""


# ---- commands ------------------------------------------------------------------------------
# Each command lives in its own section below; keep a command's option parsing here and its
# work in the library module it calls.

# ---- section: neighbours (sampling) --------------------------------------------------------


@command("neighbours")
def neighbours_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Output .npz with idx (N,k) int64 and dist_m (N,k) float64.")
    ],
    coords: Annotated[
        Optional[Path], typer.Option("--coords", help="CSV whose header names lat and lon columns (degrees).")
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", help="Dataset name; uses its class GPS.")
    ] = None,
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", help="Root folder of --dataset.")
    ] = None,
    split_dir: Annotated[str, typer.Option("--split-dir", help="Split folder of --dataset.")] = "splits",
    k: Annotated[int, typer.Option("--k", help="Neighbours per point (exact, haversine).")] = 128,
) -> None:
    """Exact k nearest GPS neighbours of every point (or every class of a dataset)."""
    import time

    import numpy as np

    from s4g.errors import UserInputError
    from s4g.fileio import save_npz
    from s4g.sampling import gps_neighbours, read_coords_csv

    if (coords is None) == (dataset is None):
        raise UserInputError("give either --coords FILE.csv or --dataset NAME --data-root DIR")
    if coords is not None:
        lat, lon = read_coords_csv(coords)
        source = str(coords)
    else:
        if data_root is None:
            raise UserInputError(f"--dataset {dataset} needs --data-root DIR")
        from s4g.data import load_train

        train = load_train(dataset, data_root, split_dir=split_dir)
        if train.class_lat is None or train.class_lon is None:
            raise UserInputError(f"--dataset {dataset}: the data in {data_root} has no GPS coordinates")
        lat, lon = train.class_lat, train.class_lon
        source = f"{dataset} classes in {data_root}"
    if k < 1 or k >= len(lat):
        raise UserInputError(
            f"--k {k}: must be at least 1 and smaller than the number of points ({len(lat)}) in {source}"
        )
    start = time.perf_counter()
    with console.status(f"exact {k}-NN of {len(lat):,} points..."):
        idx, dist = gps_neighbours(lat, lon, k)
    seconds = time.perf_counter() - start
    save_npz(out, idx=idx, dist_m=dist)
    console.print(
        f"{len(lat):,} points from {source}, k={k}: {seconds:.2f} s; "
        f"median nearest {np.median(dist[:, 0]):.1f} m; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)"
    )


# ---- section: synth (data) -----------------------------------------------------------------


@command("synth")
def synth_cmd(
    layout: Annotated[str, typer.Option(help="Dataset layout to write: cvusa, cvact, vigor or university.")],
    out: Annotated[Path, typer.Option(help="Dataset root to write (new or empty folder).")],
    locations: Annotated[int, typer.Option(help="Pairs (cvusa, cvact), panoramas (vigor) or buildings (university) in all.")] = 1000,
    seed: Annotated[int, typer.Option(help="World and split seed; same seed, same files.")] = 0,
    size: Annotated[str, typer.Option(help="Image sizes: small (fast) or real (the releases' sizes).")] = "small",
    palette: Annotated[str, typer.Option(help="unique: one colour a building (learnable); paired: 16 shared colours; shared: independent roof/wall materials (hard).")] = "unique",
    shading: Annotated[float, typer.Option(help="Sun shading strength in [0, 1].")] = 0.5,
    shadows: Annotated[bool, typer.Option(help="Cast shadows in the aerial colours.")] = True,
    jitter: Annotated[float, typer.Option(help="Per-image colour jitter amplitude in [0, 1).")] = 0.03,
    vigor_layout: Annotated[str, typer.Option(help="vigor only: original ({City}/satellite) or reference (satellite/{City}).")] = "original",
    cvact_missing: Annotated[int, typer.Option(help="cvact only: train/val ids with one image left out.")] = 2,
    drone_views: Annotated[int, typer.Option(help="university only: drone views a building.")] = 8,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: usable CPUs, at most 8).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder that s4g synth did not write.")] = False,
    preview: Annotated[Optional[Path], typer.Option(help="Also save one aerial/panorama pair side by side to this PNG.")] = None,
) -> None:
    """Write a synthetic dataset in the exact on-disk layout of a benchmark."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from s4g.data.synthetic import LAYOUTS, write_layout

    if layout not in LAYOUTS:
        raise fail(f"unknown --layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}.")
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(f"synth {layout}", total=None)
        manifest = write_layout(
            layout, out, locations=locations, seed=seed, size=size, palette=palette, shading=shading,
            shadows=shadows, jitter=jitter, vigor_layout=vigor_layout, cvact_missing=cvact_missing,
            drone_views=drone_views, workers=workers, overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    if preview is not None:
        from s4g.data.synth_preview import save_preview

        save_preview(preview, seed=seed, palette=palette, shading=shading, shadows=shadows)
    console.print(f"wrote {len(manifest['files'])} files of the {layout} layout to {out}")

# ---- section: eval, mine (evaluation) ------------------------------------------------------

_CKPT_HELP = "s4g checkpoint (default: best.pt of the newest run under --runs-dir)."
_FROM_CKPT = "Default: the checkpoint's run config."


def _inference_inputs(checkpoint: Optional[Path], runs_dir: Path, device: Optional[str], **given):
    """(checkpoint path, model, run config, InferenceSettings, torch device) for eval, mine."""
    from s4g.embed import inference_settings, latest_checkpoint, pick_device
    from s4g.model import load_checkpoint

    if checkpoint is None:
        checkpoint = latest_checkpoint(runs_dir)
        console.print(f"using {checkpoint} (best.pt of the newest run under {runs_dir})")
    model, config = load_checkpoint(checkpoint)
    settings = inference_settings(config, str(checkpoint), **given)
    dev = pick_device(None if device in (None, "auto") else device)
    return checkpoint, model, config, settings, dev


@command("eval")
def eval_command(
    checkpoint: Annotated[Optional[Path], typer.Option(help=_CKPT_HELP)] = None,
    dataset: Annotated[Optional[str], typer.Option(help=f"Benchmark to evaluate on. {_FROM_CKPT}")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help=f"Dataset folder. {_FROM_CKPT}")] = None,
    split: Annotated[Optional[str], typer.Option(help="Evaluation split. Default: the run's eval split.")] = None,
    split_dir: Annotated[Optional[str], typer.Option(help=f"Folder of split files. {_FROM_CKPT}")] = None,
    json_out: Annotated[
        Optional[Path], typer.Option("--json", help="Metrics JSON (default: eval-<dataset>-<split>.json beside the checkpoint).")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Images per forward pass. {_FROM_CKPT}")] = None,
    workers: Annotated[Optional[int], typer.Option(help=f"DataLoader worker processes. {_FROM_CKPT}")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
    fov: Annotated[Optional[float], typer.Option(help="Cut queries to this horizontal field of view, degrees.")] = None,
    random_heading: Annotated[
        Optional[bool], typer.Option(help="With --fov: a random heading per query. Default: the run's setting.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random headings.")] = 0,
    runs_dir: Annotated[Path, typer.Option(help="Where runs live (for the default checkpoint).")] = Path("runs"),
) -> None:
    """Retrieval metrics of a checkpoint: R@1, R@5, R@10, R@1% (+ hit rate, AP where defined)."""
    from rich.table import Table

    from s4g.evaluate import evaluate_model, shown_metrics
    from s4g.fileio import save_json

    ckpt, model, _, settings, dev = _inference_inputs(
        checkpoint, runs_dir, device, dataset=dataset, data_root=data_root, split=split,
        split_dir=split_dir, batch_size=batch_size, workers=workers, fov=fov,
        random_heading=random_heading,
    )
    metrics, ev = evaluate_model(model, settings, device=dev, seed=seed)
    split_name = settings.split or "default"
    console.print(f"{settings.dataset} {split_name}: {len(ev.query_files)} queries, "
                  f"{len(ev.reference_files)} references")
    table = Table()
    names = shown_metrics(ev, metrics)
    for name in names:
        table.add_column(name.replace("hit_rate", "hit rate"), justify="right")
    table.add_row(*(f"{metrics[n]:.2f}" for n in names))
    console.print(table)
    out = json_out or ckpt.parent / f"eval-{settings.dataset}-{split_name}.json"
    save_json(out, {
        "checkpoint": str(ckpt), "dataset": settings.dataset, "data_root": settings.data_root,
        "split": settings.split, "queries": len(ev.query_files), "references": len(ev.reference_files),
        "fov": settings.fov, "random_heading": settings.random_heading, "seed": seed,
        "metrics": metrics,
    })
    console.print(f"metrics written to {out}")


@command("mine")
def mine_command(
    out: Annotated[Path, typer.Option(help="Output .npz: neighbours (C, k) int64, reference_files.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help=_CKPT_HELP)] = None,
    dataset: Annotated[Optional[str], typer.Option(help=f"Training set to mine. {_FROM_CKPT}")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help=f"Dataset folder. {_FROM_CKPT}")] = None,
    split_dir: Annotated[Optional[str], typer.Option(help=f"Folder of split files. {_FROM_CKPT}")] = None,
    k: Annotated[Optional[int], typer.Option(help="Neighbours per class (default: the run's neighbour range, 128).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Images per forward pass. {_FROM_CKPT}")] = None,
    workers: Annotated[Optional[int], typer.Option(help=f"DataLoader worker processes. {_FROM_CKPT}")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs live (for the default checkpoint).")] = Path("runs"),
) -> None:
    """Hard negatives for DSS: each class's k most similar other references under a model."""
    import numpy as np

    from s4g.data import load_train
    from s4g.fileio import save_npz
    from s4g.mining import mine_class_neighbours

    ckpt, model, config, settings, dev = _inference_inputs(
        checkpoint, runs_dir, device, dataset=dataset, data_root=data_root, split_dir=split_dir,
        batch_size=batch_size, workers=workers,
    )
    if k is None:
        k = int(config.get("neighbour_range", 128))
    train = load_train(settings.loader, settings.data_root, split_dir=settings.split_dir)
    nb = mine_class_neighbours(
        model, train, k=k, aerial_size=settings.aerial_size, ground_size=settings.ground_size,
        device=dev, batch_size=settings.batch_size, workers=settings.workers,
    )
    save_npz(out, neighbours=nb, reference_files=np.array(train.reference_files, dtype=str),
             checkpoint=np.array(str(ckpt)))
    console.print(f"{nb.shape[0]} classes × {nb.shape[1]} neighbours written to {out}")

# ---- section: train ------------------------------------------------------------------------

_PRESET = "default: the dataset's preset"


@command("train")
def train_cmd(
    dataset: Annotated[Optional[str], typer.Option(help="cvusa, cvact, vigor-same, vigor-cross, university-d2s, university-s2d, csv, or synthetic (built-in world, CPU-sized). Optional with --resume.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset root (synthetic: where to write/reuse the world; default a cache folder).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<dataset>-<YYYYmmdd-HHMMSS>/).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue from a run directory or checkpoint of the same configuration.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help=f"Encoder ({_PRESET}).")] = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained/--no-pretrained", help=f"Start from torchvision's ImageNet weights ({_PRESET}).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local torchvision state dict to start from (instead of downloading).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help=_PRESET)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Pairs per global batch, over all processes ({_PRESET}).")] = None,
    lr: Annotated[Optional[float], typer.Option(help=_PRESET)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help=_PRESET)] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option(help=_PRESET)] = None,
    sampling: Annotated[Optional[str], typer.Option(help=f"random, gps or dss ({_PRESET}).")] = None,
    neighbour_select: Annotated[Optional[int], typer.Option(help=f"Neighbours added per anchor ({_PRESET}).")] = None,
    neighbour_range: Annotated[Optional[int], typer.Option(help=f"Mined neighbours per class for DSS ({_PRESET}).")] = None,
    gps_k: Annotated[Optional[int], typer.Option(help=f"GPS neighbours per class ({_PRESET}).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help=f"Evaluate (and re-mine) every N epochs ({_PRESET}).")] = None,
    aerial_size: Annotated[Optional[int], typer.Option(help=_PRESET)] = None,
    ground_size: Annotated[Optional[tuple[int, int]], typer.Option(help=f"H W ({_PRESET}).")] = None,
    split_dir: Annotated[Optional[str], typer.Option(help="Split folder name (default splits).")] = None,
    eval_split: Annotated[Optional[str], typer.Option(help=_PRESET)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default 0).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Data-loader worker processes.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (default auto).")] = None,
    eval_batch_size: Annotated[Optional[int], typer.Option(help="Images per evaluation batch.")] = None,
    fov: Annotated[Optional[float], typer.Option(help="Crop training panoramas to this field of view, degrees.")] = None,
    random_heading: Annotated[bool, typer.Option("--random-heading", help="With --fov: random heading per sample.")] = False,
    skip_bad_images: Annotated[bool, typer.Option("--skip-bad-images", help="Skip unreadable training images instead of stopping.")] = False,
    log_every: Annotated[Optional[int], typer.Option(help="Log the loss every N steps.")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help=f"Paired geometric + photometric augmentation ({_PRESET}).")] = None,
    locations: Annotated[Optional[int], typer.Option(help="Synthetic world size (synthetic only).")] = None,
) -> None:
    """Train a model (multi-GPU: torchrun --nproc-per-node N $(which s4g) train ...)."""
    import os

    from s4g.config import TrainConfig
    from s4g.model import read_checkpoint
    from s4g.train import resume_path, run

    overrides = dict(
        data_root=None if data_root is None else str(data_root), out=None if out is None else str(out),
        backbone=backbone, pretrained=pretrained, weights=None if weights is None else str(weights),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_epochs=warmup_epochs, sampling=sampling, neighbour_select=neighbour_select,
        neighbour_range=neighbour_range, gps_k=gps_k, eval_every=eval_every, aerial_size=aerial_size,
        ground_size=ground_size, split_dir=split_dir, eval_split=eval_split, seed=seed, workers=workers,
        device=device, eval_batch_size=eval_batch_size, fov=fov, random_heading=random_heading or None,
        skip_bad_images=skip_bad_images or None, log_every=log_every, augment=augment,
        synth_locations=locations,
    )
    if dataset is not None:
        cfg = TrainConfig.from_preset(dataset, **overrides)
    elif resume is not None:  # continue the saved run's configuration
        saved = read_checkpoint(resume_path(str(resume)))["config"]
        cfg = TrainConfig.from_dict({**saved, "out": None}, **overrides)
    else:
        raise fail("--dataset is required (unless --resume names a run to continue)")
    run_dir = run(cfg, resume=None if resume is None else str(resume), console=console)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        console.print(f"run directory: {run_dir}")


# ---- section: import-weights, index, locate ------------------------------------------------


@command("import-weights")
def import_weights_cmd(
    src: Annotated[Path, typer.Argument(help="timm-layout ConvNeXt state dict (e.g. a released Sample4Geo .pth).")],
    out: Annotated[Path, typer.Option("--out", help="s4g checkpoint to write.")],
    backbone: Annotated[
        Optional[str], typer.Option(help="Expected backbone, e.g. convnext_base (default: inferred from the weights).")
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option(help="Take image sizes from this dataset's preset (default: cvusa's).")
    ] = None,
    aerial_size: Annotated[Optional[int], typer.Option(help="Aerial tile side in pixels.")] = None,
    ground_size: Annotated[
        Optional[tuple[int, int]], typer.Option(help="Ground image height and width in pixels.")
    ] = None,
) -> None:
    """Convert timm / Sample4Geo ConvNeXt weights into an s4g checkpoint."""
    from s4g.weights import import_weights

    config, ignored = import_weights(
        src, out, backbone, dataset=dataset, aerial_size=aerial_size, ground_size=ground_size
    )
    console.print(
        f"wrote {out}: {config['backbone']}, aerial {config['aerial_size']}, ground "
        f"{config['ground_size'][0]}x{config['ground_size'][1]}"
        + (f"; ignored {', '.join(ignored)}" if ignored else "")
    )


@command("index")
def index_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (s4g, or timm/Sample4Geo weights).")],
    out: Annotated[Path, typer.Option(help="Index file to write (.npz).")],
    images: Annotated[Optional[Path], typer.Option(help="Folder of aerial tiles (with --coords).")] = None,
    coords: Annotated[Optional[Path], typer.Option(help="CSV with a header naming file, lat, lon.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Index this dataset's reference tiles (with --data-root).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset folder.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Dataset split (default: the preset's eval split).")] = None,
    split_dir: Annotated[str, typer.Option(help="Folder of split files.")] = "splits",
    float16: Annotated[bool, typer.Option("--float16", help="Store embeddings as float16 (half the size).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
) -> None:
    """Embed geo-tagged aerial tiles into an index file that s4g locate searches."""
    import os

    import numpy as np

    from s4g.embed import pick_device
    from s4g.index import build_index, read_tiles_csv

    if (images is None) != (coords is None) or (images is None) == (dataset is None):
        raise fail("give either --images DIR --coords FILE.csv, or --dataset NAME --data-root DIR")
    kind = "aerial"
    if dataset is not None:
        from s4g.data import load_eval

        if data_root is None:
            raise fail("--dataset needs --data-root DIR")
        ev = load_eval(dataset, data_root, split, split_dir=split_dir)
        root, kind = data_root, ev.reference_kind
        files = [os.path.relpath(f, root) for f in ev.reference_files]
        n = len(files)
        if ev.reference_lat is None or ev.reference_lon is None:
            console.print(f"[yellow]note:[/] {dataset} has no tile coordinates; locate will list tiles without lat/lon")
            lat = lon = np.full(n, np.nan)
        else:
            lat, lon = ev.reference_lat, ev.reference_lon
    else:
        root = images
        files, lat, lon = read_tiles_csv(coords, images)
    meta = build_index(
        checkpoint, files, lat, lon, root, out, reference_kind=kind, float16=float16,
        device=pick_device(device), batch_size=batch_size, workers=workers,
    )
    spacing = meta["tile_spacing_m"]
    console.print(
        f"wrote {out}: {meta['count']} tiles, {meta['model']['embed_dim']}-d {meta['dtype']} "
        f"embeddings ({meta['model']['backbone']})"
        + (f", median tile spacing {spacing:.1f} m" if spacing else "")
    )


@command("locate")
def locate_cmd(
    photos: Annotated[list[Path], typer.Argument(help="Ground photos: panoramas, or limited field of view with --fov.")],
    index: Annotated[Path, typer.Option(help="Index file made by s4g index.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint (default: the one recorded in the index).")] = None,
    k: Annotated[int, typer.Option(help="Tiles listed per photo.")] = 5,
    fov: Annotated[Optional[float], typer.Option(help="The photos' horizontal field of view, degrees (default: 360° panoramas).")] = None,
    heading: Annotated[Optional[float], typer.Option(help="Compass heading of a panorama's centre column, degrees.")] = None,
    radius: Annotated[Optional[float], typer.Option(help="Metres within which top-k tiles agree (default: 2 tile spacings).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N (default: cuda if available).")] = None,
) -> None:
    """Locate ground photos: their most similar aerial tiles and a consensus position."""
    import json

    from s4g.embed import pick_device
    from s4g.index import open_index
    from s4g.locate import locate_photos

    found = locate_photos(
        open_index(index), [str(p) for p in photos], checkpoint=checkpoint, k=k, fov_deg=fov,
        heading_deg=heading, radius_m=radius, device=pick_device(device),
    )
    if json_out:
        print(json.dumps(found, indent=2))
        return
    for item in found:
        _print_location(item)


def _print_location(item: dict) -> None:
    from rich.table import Table

    def deg(v):
        return "—" if v is None else f"{v:.6f}"

    table = Table(title=item["photo"], title_justify="left")
    for name in ("rank", "tile", "lat", "lon", "score"):
        table.add_column(name, justify="left" if name == "tile" else "right")
    for r in item["results"]:
        table.add_row(str(r["rank"]), r["file"], deg(r["lat"]), deg(r["lon"]), f"{r['score']:.4f}")
    console.print(table)
    agreed = item["consensus"]
    if agreed:
        console.print(
            f"consensus: {agreed['lat']:.6f}, {agreed['lon']:.6f} (ranks "
            f"{', '.join(map(str, agreed['ranks']))} within {agreed['radius_m']:.0f} m)"
        )
    else:
        console.print("consensus: none (no two of the top tiles are close together)")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
