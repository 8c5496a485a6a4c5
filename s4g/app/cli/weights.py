"""`s4g import-weights`: released Sample4Geo / timm ConvNeXt weights as an s4g checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from s4g.app.cli.app import command, console, require_paths
from s4g.app.cli.options import DatasetName, value
from s4g.flags import Flag


@command("import-weights")
def import_weights_cmd(
    src: Annotated[Path, typer.Argument(
        metavar="SOURCE", help="timm-layout ConvNeXt state dict (e.g. a released Sample4Geo .pth).")],
    out: Annotated[Path, typer.Option(Flag.OUT, help="s4g checkpoint to write.")],
    backbone: Annotated[
        str | None,
        typer.Option(Flag.BACKBONE, help="Expected backbone, e.g. convnext_base (default: inferred from the weights)."),
    ] = None,
    dataset: Annotated[
        DatasetName | None,
        typer.Option(Flag.DATASET, help="Take image sizes from this dataset's preset (default: cvusa's)."),
    ] = None,
    aerial_size: Annotated[int | None, typer.Option(Flag.AERIAL_SIZE, help="Aerial tile side in pixels.")] = None,
    ground_size: Annotated[
        tuple[int, int] | None, typer.Option(Flag.GROUND_SIZE, help="Ground image height and width in pixels.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(
        Flag.OVERWRITE, help=f"Replace an existing s4g checkpoint at {Flag.OUT}.")] = False,
) -> None:
    """Convert timm / Sample4Geo ConvNeXt weights into an s4g checkpoint."""
    name = value(dataset)
    require_paths(("the source file", src))
    from s4g.app.jobs.train.checks import check_image_sizes
    from s4g.data import registry as datasets
    from s4g.fileio import check_output
    from s4g.model.checkpoint import CHECKPOINT_FILE, import_weights

    check_image_sizes(aerial_size, ground_size)

    check_output(out, CHECKPOINT_FILE, option=Flag.OUT, overwrite=overwrite, inputs=[("the source file", src)])
    config, ignored = import_weights(
        src, out, backbone, preset=datasets.get(name).preset if name else None, dataset=name,
        aerial_size=aerial_size, ground_size=ground_size,
    )
    console.print(
        f"wrote {out}: {config['backbone']}, aerial {config['aerial_size']}, ground "
        f"{config['ground_size'][0]}x{config['ground_size'][1]}"
        + (f"; ignored {', '.join(ignored)}" if ignored else "")
    )
