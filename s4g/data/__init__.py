"""Dataset loaders: every benchmark becomes the same TrainSet / EvalSet records.

`load_train(name, root)` and `load_eval(name, root, split)` dispatch on the dataset name;
nothing downstream knows which dataset it reads. Indexing lists folders but never opens an
image.
"""

from __future__ import annotations

import os

from s4g.config import DATASETS, preset_for
from s4g.data import csvpairs, cvact, cvusa, university, vigor
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError

# "synthetic" is not a layout of its own: training writes it in CVUSA's layout.
DATASET_NAMES = tuple(name for name in DATASETS if name != "synthetic")

_EVAL_SPLITS = {
    "cvusa": cvusa.EVAL_SPLITS,
    "cvact": cvact.EVAL_SPLITS,
    "vigor-same": vigor.EVAL_SPLITS,
    "vigor-cross": vigor.EVAL_SPLITS,
    "university-d2s": university.EVAL_SPLITS,
    "university-s2d": university.EVAL_SPLITS,
    "csv": csvpairs.EVAL_SPLITS,
}


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise UserInputError(
            f"unknown dataset {name!r} (--dataset); choose one of: {', '.join(DATASET_NAMES)}."
        )


def load_train(name: str, root: str | os.PathLike, *, split_dir: str = "splits") -> TrainSet:
    """The training pairs of dataset `name` under `root`.

    split_dir: folder (relative to root, or absolute) of the split files; only VIGOR and
    CVUSA have one (e.g. "splits__corrected" for VIGOR's corrected labels).
    """
    _check_name(name)
    if name == "cvusa":
        return cvusa.load_train(root, split_dir=split_dir)
    if name == "cvact":
        return cvact.load_train(root, split_dir=split_dir)
    if name.startswith("vigor-"):
        return vigor.load_train(root, name.removeprefix("vigor-"), split_dir=split_dir)
    if name.startswith("university-"):
        return university.load_train(root, split_dir=split_dir)
    return csvpairs.load_train(root, split_dir=split_dir)


def load_eval(
    name: str, root: str | os.PathLike, split: str | None = None, *, split_dir: str = "splits"
) -> EvalSet:
    """The evaluation split `split` of dataset `name` (None = the preset's eval split).

    Valid splits: cvusa "test"; cvact "val", "test"; vigor-* "test"; university-* "test";
    csv "test", "train". Anything else is a UserInputError listing the valid ones.
    """
    _check_name(name)
    split = preset_for(name).eval_split if split is None else split
    if split not in _EVAL_SPLITS[name]:
        raise UserInputError(
            f"unknown split {split!r} (--split) for dataset {name!r}; valid: "
            f"{', '.join(_EVAL_SPLITS[name])}."
        )
    if name == "cvusa":
        return cvusa.load_eval(root, split, split_dir=split_dir)
    if name == "cvact":
        return cvact.load_eval(root, split, split_dir=split_dir)
    if name.startswith("vigor-"):
        return vigor.load_eval(root, name.removeprefix("vigor-"), split, split_dir=split_dir)
    if name.startswith("university-"):
        return university.load_eval(root, name.removeprefix("university-"), split, split_dir=split_dir)
    return csvpairs.load_eval(root, split, split_dir=split_dir)


__all__ = ["DATASET_NAMES", "EvalSet", "TrainSet", "load_eval", "load_train"]
