"""The small record types every dataset loader returns; nothing downstream knows the dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainSet:
    """Training pairs of one dataset.

    query_files: P absolute paths of ground images (panoramas or drone photos).
    reference_files: C absolute paths of aerial tiles; class c is reference_files[c].
    pair_class: (P,) int64 in [0, C): the positive reference (class) of each query.
    class_lat, class_lon: (C,) float64 degrees of each class, or None when unknown.
    query_kind: "panorama" or "drone" (decides the ground image size and augmentation).
    """

    name: str
    query_files: list[str]
    reference_files: list[str]
    pair_class: np.ndarray
    class_lat: np.ndarray | None
    class_lon: np.ndarray | None
    query_kind: str = "panorama"

    @property
    def num_pairs(self) -> int:
        return len(self.query_files)

    @property
    def num_classes(self) -> int:
        return len(self.reference_files)


@dataclass(frozen=True)
class EvalSet:
    """A retrieval benchmark split: queries are searched against references.

    query_files: Q absolute paths; reference_files: R absolute paths.
    query_labels: (Q,) int64; reference_labels: (R,) int64. A reference is a positive of a
      query when the labels are equal (one or several positives; references whose label no
      query has are distractors).
    semi_positives: (Q, S) int64 labels of each query's semi-positive references (VIGOR),
      padded with -1, or None.
    reference_lat, reference_lon: (R,) float64 degrees of each reference's centre, or None.
    query_lat, query_lon: (Q,) float64 degrees where each query was taken, or None.
    query_kind: "panorama", "drone" or "aerial" (University-1652 satellite→drone queries).
    reference_kind: "aerial" or "drone".
    """

    name: str
    query_files: list[str]
    reference_files: list[str]
    query_labels: np.ndarray
    reference_labels: np.ndarray
    semi_positives: np.ndarray | None = None
    reference_lat: np.ndarray | None = None
    reference_lon: np.ndarray | None = None
    query_lat: np.ndarray | None = None
    query_lon: np.ndarray | None = None
    query_kind: str = "panorama"
    reference_kind: str = "aerial"
