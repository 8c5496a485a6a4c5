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
from s4g.retrieval.evaluate import retrieval_metrics


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
                            *, protocol: str = "sample4geo", bins: int = 8) -> dict[str, float]:
    """{"R@1", "R@5", "R@10", "R@1%"} in percent of colour-histogram matching, counted by
    s4g.retrieval.evaluate.retrieval_metrics under `protocol`, exactly as a model's embeddings are.

    Labels default to positions (query i matches reference i).
    """
    q_lab = np.arange(len(query_files)) if query_labels is None else np.asarray(query_labels)
    r_lab = np.arange(len(reference_files)) if reference_labels is None else np.asarray(reference_labels)
    if len(q_lab) != len(query_files) or len(r_lab) != len(reference_files):
        raise UserInputError("colour baseline: one label per query file and per reference file is needed.")
    if not len(query_files) or not len(reference_files):
        raise UserInputError("colour baseline: no query or no reference files given.")
    q, r = colour_histograms(query_files, bins), colour_histograms(reference_files, bins)
    metrics = retrieval_metrics(q, r, q_lab, r_lab, protocol=protocol, device="cpu")
    return {k: metrics[k] for k in ("R@1", "R@5", "R@10", "R@1%")}
