"""Colour-histogram retrieval: the no-learning baseline to report next to synthetic results.

A world where each building has one colour can be solved partly by colour statistics alone;
this matcher measures how far. Each image becomes a joint RGB histogram (bins^3 cells, on a
copy shrunk to at most 64 px a side), square-rooted and L2-normalised (Hellinger), and queries
are ranked against references by dot product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from s4g.errors import UserInputError


def colour_histograms(files: Sequence[str], bins: int = 8, max_side: int = 64) -> np.ndarray:
    """(N, bins**3) float32 rows: sqrt of the normalised joint RGB histogram, unit length."""
    out = np.zeros((len(files), bins ** 3), np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                im.thumbnail((max_side, max_side))
                a = np.asarray(im, np.uint16) * bins // 256
        except OSError as err:
            raise UserInputError(f"cannot read image {str(f)!r} for the colour baseline: {err}") from None
        code = (a[..., 0] * bins + a[..., 1]) * bins + a[..., 2]
        out[i] = np.sqrt(np.bincount(code.ravel(), minlength=bins ** 3) / code.size)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def colour_histogram_recall(query_files: Sequence[str], reference_files: Sequence[str],
                            query_labels: np.ndarray | None = None, reference_labels: np.ndarray | None = None,
                            ks: Sequence[int] = (1, 5, 10), bins: int = 8) -> dict[str, float]:
    """Recall in percent ({"R@1", "R@5", "R@10", "R@1%"}) of colour-histogram matching.

    Labels default to positions (query i matches reference i). A query's rank is the number
    of non-positive references scoring strictly higher than its best positive; R@k counts
    ranks < k, R@1% uses k = max(1, round(R / 100)), as in s4g.evaluate."""
    q_lab = np.arange(len(query_files)) if query_labels is None else np.asarray(query_labels)
    r_lab = np.arange(len(reference_files)) if reference_labels is None else np.asarray(reference_labels)
    if len(q_lab) != len(query_files) or len(r_lab) != len(reference_files):
        raise UserInputError("colour baseline: one label per query file and per reference file is needed.")
    if not len(query_files) or not len(reference_files):
        raise UserInputError("colour baseline: no query or no reference files given.")
    q, r = colour_histograms(query_files, bins), colour_histograms(reference_files, bins)
    ranks = np.empty(len(q), np.int64)
    for s in range(0, len(q), 1024):
        sim = q[s:s + 1024] @ r.T
        pos = q_lab[s:s + 1024, None] == r_lab[None, :]
        if not pos.any(axis=1).all():
            raise UserInputError("colour baseline: some query has no reference with its label.")
        best = np.where(pos, sim, -np.inf).max(axis=1, keepdims=True)
        ranks[s:s + 1024] = ((sim > best) & ~pos).sum(axis=1)
    one_pct = max(1, round(len(r) / 100))
    out = {f"R@{k}": float(100 * np.mean(ranks < k)) for k in ks}
    out["R@1%"] = float(100 * np.mean(ranks < one_pct))
    return out
