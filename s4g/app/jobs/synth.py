"""The job of `s4g synth`: a synthetic world written in a benchmark's on-disk layout, and
optionally a preview picture of one of its pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from s4g.app.synth.preview import save_preview
from s4g.app.synth.writer import write_layout
from s4g.fileio import PNG_IMAGE, check_distinct_outputs, check_output
from s4g.flags import Flag
from s4g.runtime import progress


def write_world(layout: str, out: Path, *, seed: int, palette: str, shading: float, shadows: bool,
                preview: Path | None, overwrite: bool, progress_console: Console, **world: Any) -> str:
    """Write the `layout` world to `out` (write_layout's options in `world`), then the --preview
    PNG when given; the line that says what was written."""
    if preview is not None:
        check_distinct_outputs([(Flag.OUT, out), (Flag.PREVIEW, preview)])
        check_output(preview, PNG_IMAGE, option=Flag.PREVIEW, overwrite=overwrite)
    with progress(console=progress_console) as bar:
        task = bar.add_task(f"synth {layout}", total=None)
        manifest = write_layout(
            layout, out, seed=seed, palette=palette, shading=shading, shadows=shadows, overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total), **world)
    if preview is not None:
        save_preview(preview, seed=seed, palette=palette, shading=shading, shadows=shadows)
    return f"wrote {len(manifest['files'])} files of the {layout} layout to {out}"


__all__ = ["write_world"]
