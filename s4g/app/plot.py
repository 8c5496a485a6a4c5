"""Training curves of one or several runs from their metrics.jsonl, drawn with matplotlib.

matplotlib is the optional extra `plot` (pip install "s4g[plot]"); nothing else in s4g needs
it. Panels, each against epoch: the training loss, learning rate and temperature (τ = 1 /
the logged logit scale) at every log step (x = epoch - 1 + the share of the epoch's steps
done), then the evaluation metrics at every evaluation (x = the epoch it followed; epoch 0 =
before training): R@1/5/10/1%, hit rate and AP where the run logged them, the localisation
error in metres and the share of queries within 25 m .. 1 km where positions are known.
One colour per run; the colour-histogram baseline (synthetic world) as a faint level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s4g.errors import UserInputError
from s4g.fileio import atomic_path, figure_mark, read_json_lines
from s4g.flags import Flag
from s4g.retrieval.results import WITHIN_M, within_key

# (panel title, [(metric key, line style)]); a panel is drawn when a run logged one of its keys
EVAL_PANELS = [
    ("recall (%)", [("R@1", "-"), ("R@5", "--"), ("R@10", ":"), ("R@1%", "-.")]),
    ("hit rate / AP (%)", [("hit_rate", "-"), ("AP", "--")]),
    ("top-1 error (m)", [("error_median_m", "-"), ("error_mean_m", "--")]),
    ("queries within (%)", [(within_key(m), s) for m, s in zip(WITHIN_M, ("-", "--", "-.", ":"))]),
]
MISSING_EXTRA = ("s4g plot draws with matplotlib, an optional extra of s4g: install it with "
                 "pip install \"s4g[plot]\" (or pip install matplotlib)")


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserInputError(MISSING_EXTRA) from None
    return Figure


# Only the formats fileio.FIGURE recognises: a figure in any other format could not be
# replaced by the next `s4g plot --overwrite` (check_output keeps files it cannot tell).
FIGURE_FORMATS = ("png", "pdf", "svg")


def figure_format(out: str | os.PathLike) -> str:
    """The figure format `out`'s suffix names (one of FIGURE_FORMATS); UserInputError naming
    --out for another suffix."""
    fmt = Path(out).suffix.lstrip(".").lower()
    if fmt not in FIGURE_FORMATS:
        raise UserInputError(f"{Flag.OUT} {out}: the suffix must be one of "
                             f"{', '.join('.' + f for f in FIGURE_FORMATS)} (the figure formats s4g plot writes)")
    return fmt


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of RUN_DIR/metrics.jsonl; UserInputError naming the file when it is
    missing, holds no record or a line that is not a JSON object."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; give a run directory that s4g train wrote")
    records = read_json_lines(path)
    if not records:
        raise UserInputError(f"{path}: holds no record yet")
    return records


def training_curve(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """{"epoch", "loss", "lr", "temperature"} of the training log records (those with a
    loss), in log order; "epoch" as a fraction (see the module docstring)."""
    train = [r for r in records if "loss" in r and "step" in r]
    epochs = np.array([int(r["epoch"]) for r in train])
    steps = np.array([int(r["step"]) for r in train], dtype=np.float64)
    x = np.empty(steps.size)
    start = 0.0
    for e in np.unique(epochs):  # an epoch's last log is its last step
        mine = epochs == e
        end = steps[mine].max()
        x[mine] = e - 1 + (steps[mine] - start) / max(end - start, 1.0)
        start = end
    return {"epoch": x, "loss": np.array([float(r["loss"]) for r in train]),
            "lr": np.array([float(r["lr"]) for r in train]),
            "temperature": np.array([1.0 / float(r["scale"]) if r.get("scale") else np.nan for r in train])}


def _eval_records(records):
    return [r for r in records if r.get("kind") == "eval"]


def draw_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[str]:
    """Draw the curves of `run_dirs` into one figure at `out` (format from its suffix),
    written atomically. -> the panel titles drawn."""
    fmt = figure_format(out)
    runs = [(Path(d).resolve().name, read_metrics(d)) for d in run_dirs]
    evals = [_eval_records(recs) for _, recs in runs]
    panels = ["training loss", "learning rate", "temperature τ"]
    panels += [t for t, keys in EVAL_PANELS if any(k in r for rs in evals for r in rs for k, _ in keys)]
    n_cols = 3 if len(panels) <= 6 else 4
    n_rows = -(-len(panels) // n_cols)
    fig = _figure_class()(figsize=(4.2 * n_cols, 3.0 * n_rows + 0.6), layout="constrained")
    axes = dict(zip(panels, fig.subplots(n_rows, n_cols, squeeze=False).ravel()))
    for extra in list(fig.axes)[len(panels):]:
        extra.set_visible(False)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for (name, records), recs, colour in zip(runs, evals, colours):
        curve = training_curve(records)
        for panel, key in zip(panels[:3], ("loss", "lr", "temperature")):
            axes[panel].plot(curve["epoch"], curve[key], color=colour, lw=1.2, label=name)
        for title, keys in EVAL_PANELS:
            if title in axes:
                _eval_lines(axes[title], recs, keys, colour)
        baseline = next((r for r in records if r.get("kind") == "colour_baseline"), None)
        if baseline and "R@1" in baseline and "recall (%)" in axes:
            axes["recall (%)"].axhline(baseline["R@1"], color=colour, lw=2.5, alpha=0.3)
    _decorate(fig, axes, runs, evals)
    with atomic_path(out, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=100, metadata=figure_mark(fmt))
    return panels


def _eval_lines(ax, recs, keys, colour) -> None:
    for key, style in keys:
        pts = [(r["epoch"], r[key]) for r in recs if key in r]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, color=colour, ls=style, marker="o", ms=2.5, lw=1.2)


def _decorate(fig, axes, runs, evals) -> None:
    from matplotlib.lines import Line2D  # matplotlib is there: _figure_class succeeded

    for title, ax in axes.items():
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes["learning rate"].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if "top-1 error (m)" in axes:  # metres span decades; linear below 1 m, where 0 (found) lies
        axes["top-1 error (m)"].set_yscale("symlog", linthresh=1.0)
    for title, keys in EVAL_PANELS:
        present = [(k, s) for k, s in keys if any(k in r for rs in evals for r in rs)]
        if title in axes and present:
            handles = [Line2D([], [], color="k", ls=s, lw=1.2) for _, s in present]
            labels = [k.replace("_", " ").replace("error ", "") for k, _ in present]
            if title == "recall (%)" and any(r.get("kind") == "colour_baseline" for _, rs in runs for r in rs):
                handles.append(Line2D([], [], color="k", lw=2.5, alpha=0.3))
                labels.append("colour baseline R@1")
            axes[title].legend(handles, labels, fontsize=7, loc="best")
    splits = sorted({str(r.get("split")) for rs in evals for r in rs if r.get("split")})
    fig.suptitle("training curves" + (f" (evaluation on {', '.join(splits)})" if splits else ""), fontsize=11)
    fig.legend(handles=[Line2D([], [], color=f"C{i % 10}", lw=2) for i in range(len(runs))],
               labels=[name for name, _ in runs], loc="outside lower center", ncols=min(len(runs), 4), fontsize=8)


__all__ = ["EVAL_PANELS", "FIGURE_FORMATS", "MISSING_EXTRA", "draw_runs", "figure_format", "read_metrics",
           "training_curve"]
