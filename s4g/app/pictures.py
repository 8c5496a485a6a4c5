"""Retrieval pictures: rows of a query image beside the reference tiles found for it.

Every picture is one grid drawn with Pillow: a title band, then one row per query whose
cells are images framed in a colour (ImageOps.expand) with caption lines under them.
Geometry (pixels), for rows of `n_cols` reference cells of side `cell`:
  a cell's box is (cell + 2·FRAME) square, its caption CAPTION_LINES lines below it;
  the query column is as wide as the widest query scaled to `cell` high (at most
  MAX_QUERY_ASPECT·cell), separated from the references by an extra GAP.
grid_boxes gives every image box, so the layout is stated once and tests can read it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from s4g.data.records import EvalSet
from s4g.errors import UserInputError
from s4g.fileio import atomic_path, png_mark
from s4g.retrieval.results import SplitResults

CELL = 128  # default image side, px
FRAME = 4  # frame width, px
PAD = 6  # space between cells, px
GAP = 12  # extra space after the query column, px
FONT_PX = 12
LINE = 15  # px per caption or title line
CAPTION_LINES = 2
MAX_QUERY_ASPECT = 4.0  # wider queries (CVUSA panoramas, 5.5:1) are shrunk to this width
# Okabe-Ito colours: told apart with every common colour-vision deficiency.
COLOURS = {
    "true": (0, 158, 115),  # bluish green: a positive
    "wrong": (213, 94, 0),  # vermillion: not a positive
    "semi": (86, 180, 233),  # sky blue: a semi-positive (VIGOR)
    "agree": (0, 114, 178),  # blue: a tile of the consensus (s4g locate)
    "plain": (170, 170, 170),  # grey: no verdict
}
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Cell:
    """One image of a grid: its file (None = an empty cell), caption lines, frame colour
    (a COLOURS key, or None for no frame)."""

    path: str | None
    caption: Sequence[str] = ()
    frame: str | None = None


@dataclass(frozen=True)
class Row:
    """A query cell and its reference cells (all rows of a grid have as many)."""

    query: Cell
    cells: Sequence[Cell] = field(default_factory=list)


def _open(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise UserInputError(f"cannot read the image file {path!r} for the picture: {err}") from None


def query_width(sizes: Sequence[tuple[int, int]], cell: int) -> int:
    """Width of the query column: the widest (W, H) image scaled to `cell` high, capped at
    MAX_QUERY_ASPECT·cell, and at least `cell`."""
    widest = max((w / h for w, h in sizes), default=1.0)
    return max(cell, round(cell * min(widest, MAX_QUERY_ASPECT)))


def grid_boxes(n_rows: int, n_cols: int, query_w: int, cell: int, title_lines: int):
    """((width, height) of the picture, boxes[row][col]: (left, top, right, bottom) of each
    framed image, column 0 the query). Captions lie under each box."""
    title_h = PAD + LINE * title_lines + PAD
    row_h = cell + 2 * FRAME + CAPTION_LINES * LINE + PAD
    lefts = [PAD] + [PAD + query_w + 2 * FRAME + PAD + GAP + c * (cell + 2 * FRAME + PAD) for c in range(n_cols)]
    widths = [query_w] + [cell] * n_cols
    boxes = [[(x, title_h + r * row_h, x + w + 2 * FRAME, title_h + r * row_h + cell + 2 * FRAME)
              for x, w in zip(lefts, widths)] for r in range(n_rows)]
    width = lefts[-1] + widths[-1] + 2 * FRAME + PAD
    return (width, title_h + n_rows * row_h), boxes


def _fit(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> str:
    """`text`, cut at the front with an ellipsis to fit `width` px (file names keep their end)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def _paste(canvas: Image.Image, cell: Cell, box, image: Image.Image | None) -> None:
    left, top, right, bottom = box
    if image is None:
        return
    inner = (right - left - 2 * FRAME, bottom - top - 2 * FRAME)
    framed = Image.new("RGB", inner, _WHITE)
    fitted = ImageOps.contain(image, inner)
    framed.paste(fitted, ((inner[0] - fitted.width) // 2, (inner[1] - fitted.height) // 2))
    colour = COLOURS[cell.frame] if cell.frame else _WHITE
    canvas.paste(ImageOps.expand(framed, border=FRAME, fill=colour), (left, top))


def draw_grid(rows: Sequence[Row], title: Sequence[str], *, cell: int = CELL) -> Image.Image:
    """The picture of `rows` (each with the same number of reference cells) under `title`
    lines; see the module docstring for the geometry. UserInputError names an unreadable image."""
    n_cols = len(rows[0].cells) if rows else 0
    if any(len(r.cells) != n_cols for r in rows):
        raise ValueError("every row of a grid needs the same number of cells")
    queries = [_open(r.query.path) if r.query.path else None for r in rows]
    size, boxes = grid_boxes(len(rows), n_cols, query_width([q.size for q in queries if q], cell), cell, len(title))
    canvas = Image.new("RGB", size, _WHITE)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_PX)
    for i, line in enumerate(title):
        draw.text((PAD, PAD + i * LINE), _fit(line, font, size[0] - 2 * PAD, draw), fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        for c, (item, image) in enumerate([(row.query, queries[r])]
                                          + [(x, _open(x.path) if x.path else None) for x in row.cells]):
            box = boxes[r][c]
            _paste(canvas, item, box, image)
            for j, line in enumerate(list(item.caption)[:CAPTION_LINES]):
                draw.text((box[0], box[3] + 1 + j * LINE), _fit(line, font, box[2] - box[0], draw),
                          fill=(0, 0, 0), font=font)
    return canvas


def _verdicts(ev: EvalSet, q: int, rows: np.ndarray) -> list[str]:
    """"true", "semi" or "wrong" for each reference row listed for query q."""
    labels = ev.reference_labels[rows]
    semi = np.zeros(rows.size, dtype=bool)
    if ev.semi_positives is not None:
        semi = np.isin(labels, ev.semi_positives[q][ev.semi_positives[q] != -1])
    own = labels == ev.query_labels[q]
    return ["true" if o else "semi" if s else "wrong" for o, s in zip(own, semi)]


def example_rows(ev: EvalSet, results: SplitResults, picked: Sequence[int]) -> list[Row]:
    """One row per picked query: the query (with its true reference's place, rank + 1, and
    how far its top-1 reference's centre lies from it), its top-k references framed by
    verdict with "#place  score" under each, and, when no positive is among them, one more
    cell with the true reference at its place; the other rows leave that cell empty."""
    if results.top is None or results.top_scores is None:
        raise ValueError("example_rows needs the top-k lists: split_results(..., k=...) with k > 0")
    rows, missing = [], False
    for q in picked:
        top, scores = results.top[q], results.top_scores[q]
        verdicts = _verdicts(ev, q, top)
        cells = [Cell(ev.reference_files[row], [f"#{i + 1}  {s:.3f}", os.path.basename(ev.reference_files[row])], v)
                 for i, (row, s, v) in enumerate(zip(top, scores, verdicts))]
        rank, true = int(results.rank[q]), int(results.true_reference[q])
        if "true" not in verdicts:
            missing = True
            cells.append(Cell(ev.reference_files[true], [f"true #{rank + 1}  {results.true_score[q]:.3f}",
                                                         os.path.basename(ev.reference_files[true])], "true"))
        err = None if results.error_m is None else results.error_m[q]
        where = f"true #{rank + 1}" + (f" · {err:,.0f} m off" if err is not None and np.isfinite(err) else "")
        rows.append(Row(Cell(ev.query_files[q], [os.path.basename(ev.query_files[q]), where]), cells))
    if missing:  # pad the rows that found a positive, so every row has the extra column
        k = results.top.shape[1]
        rows = [r if len(r.cells) > k else Row(r.query, [*r.cells, Cell(None)]) for r in rows]
    return rows


def examples_picture(ev: EvalSet, results: SplitResults, picked: Sequence[int], *, name: str, seed: int,
                     cell: int = CELL) -> Image.Image:
    """The retrieval picture of the picked queries (see example_rows) under a title naming
    the split (`name`, e.g. "cvusa test") and saying how the rows were drawn."""
    n_ok = int((results.rank[np.asarray(picked, dtype=np.int64)] == 0).sum())
    legend = "frames: green = a true reference, vermillion = another one"
    if ev.semi_positives is not None:
        legend += ", sky blue = a semi-positive"
    title = [f"{name}: {n_ok} queries found first and {len(picked) - n_ok} not, drawn with seed {seed} "
             f"from {len(ev.query_files)} (R@1 {results.metrics['R@1']:.1f} %)",
             legend + "; under each: #place in the ranking, score (dot product)"]
    return draw_grid(example_rows(ev, results, picked), title, cell=cell)


def _degrees(lat, lon) -> str:
    return "no position" if lat is None or lon is None else f"{lat:.6f}, {lon:.6f}"


def locate_picture(found: Sequence[dict], *, index_name: str, cell: int = CELL) -> Image.Image:
    """One row per located photo (s4g.app.jobs.locate.locate_photos's dicts): the photo with its
    consensus position, then its top-k tiles with rank, score and centre coordinates; the
    tiles of the consensus framed blue, the others grey."""
    rows = []
    for item in found:
        agreed = item["consensus"]
        ranks = set(agreed["ranks"]) if agreed else set()
        cells = [Cell(r["path"], [f"#{r['rank']}  {r['score']:.3f}", _degrees(r["lat"], r["lon"])],
                      "agree" if r["rank"] in ranks else "plain") for r in item["results"]]
        where = f"consensus {_degrees(agreed['lat'], agreed['lon'])}" if agreed else "no consensus"
        rows.append(Row(Cell(item["photo"], [os.path.basename(item["photo"]), where]), cells))
    k = max((len(r.cells) for r in rows), default=0)
    rows = [Row(r.query, [*r.cells, *[Cell(None)] * (k - len(r.cells))]) for r in rows]
    title = [f"s4g locate: {len(rows)} photo(s), top {k} tiles of {index_name}",
             "frames: blue = tiles that agree on the consensus position, grey = the others; "
             "under each: #rank, score, lat, lon of the tile centre"]
    return draw_grid(rows, title, cell=cell)


def save_png(path: str | os.PathLike, image: Image.Image) -> None:
    """Write `image` as a PNG at `path` atomically (whatever the suffix says), with s4g's mark."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True, pnginfo=png_mark())


__all__ = [
    "CELL", "COLOURS", "FRAME", "Cell", "Row", "draw_grid", "example_rows", "examples_picture", "grid_boxes",
    "locate_picture", "query_width", "save_png",
]
