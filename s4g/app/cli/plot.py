"""`s4g plot`: training curves of one or several runs, from their metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from s4g.app.cli.app import command, console
from s4g.errors import UserInputError
from s4g.flags import Flag


@command("plot")
def plot_cmd(
    runs: Annotated[list[Path], typer.Argument(
        metavar="RUN_DIR", help="Run directories (with metrics.jsonl); several share one figure.")],
    out: Annotated[Path | None, typer.Option(
        Flag.OUT,
        help="Image to write; its suffix picks the format (.png, .pdf, .svg). Default: RUN_DIR/curves.png "
             "for one run; needed with several.")] = None,
    overwrite: Annotated[bool, typer.Option(
        Flag.OVERWRITE, help="Replace an existing figure (a plot made earlier).")] = False,
) -> None:
    """Training curves: loss, learning rate, temperature and the evaluation metrics against
    epoch (needs the optional extra: pip install "s4g[plot]")."""
    option: str = Flag.OUT
    if out is None:
        if len(runs) > 1:
            raise UserInputError(f"{Flag.OUT} is needed to compare {len(runs)} runs in one figure")
        out, option = runs[0] / "curves.png", f"the default {Flag.OUT}"
    from s4g.app.plot import draw_runs
    from s4g.fileio import FIGURE, check_output

    check_output(out, FIGURE, option=option, overwrite=overwrite,
                 inputs=[("the metrics.jsonl of a run", run / "metrics.jsonl") for run in runs])

    panels = draw_runs(runs, out)
    console.print(f"{len(panels)} panels of {len(runs)} run(s) written to {out}")
