"""The dataset registry: one consistent entry per name, and what the CLI derives from it."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from s4g import datasets
from s4g.cli import app
from s4g.data.records import EvalSet
from s4g.errors import UserInputError
from s4g.evaluate import PROTOCOLS
from s4g.inference import shown_metrics


@pytest.mark.parametrize("name", datasets.NAMES)
def test_every_entry_is_consistent(name):
    spec = datasets.get(name)
    assert spec.name == name
    assert spec.preset.eval_split in spec.eval_splits
    assert spec.protocol in PROTOCOLS
    # GPS or DSS sampling by default only where the dataset has coordinates
    assert spec.has_gps or spec.preset.sampling == "random"
    assert datasets.train_config(name).dataset == name


def test_unknown_names_and_splits_list_the_valid_ones():
    with pytest.raises(UserInputError, match="cvusa, cvact"):
        datasets.get("kitti")
    with pytest.raises(UserInputError, match="valid: val, test"):
        datasets.get("cvact").check_split("train")
    with pytest.raises(UserInputError, match="--data-root is required for --dataset vigor-same"):
        datasets.get("vigor-same").data_root(None)


def test_cli_lists_the_registry_names():
    res = CliRunner().invoke(app, ["train", "--dataset", "kitti"])
    assert res.exit_code == 2
    for name in datasets.NAMES:
        assert name in res.output


def test_shown_metrics_per_benchmark():
    metrics = {"R@1": 1.0, "R@5": 2.0, "R@10": 3.0, "R@1%": 4.0, "AP": 5.0, "hit_rate": 6.0}
    labels = np.zeros(1, dtype=np.int64)
    base = dict(name="x", query_files=["q"], reference_files=["r"], query_labels=labels, reference_labels=labels)
    assert shown_metrics(EvalSet(**base), metrics) == ["R@1", "R@5", "R@10", "R@1%"]
    vigor = EvalSet(**base, semi_positives=np.zeros((1, 3), dtype=np.int64))
    assert shown_metrics(vigor, metrics)[-1] == "hit_rate"
    university = EvalSet(**base, query_kind="drone", reference_kind="aerial")
    assert shown_metrics(university, metrics)[-1] == "AP"
