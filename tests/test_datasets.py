"""The dataset registry: one consistent entry per name, and what the CLI derives from it."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.jobs.inference import shown_metrics
from s4g.app.jobs.train.data import RunData, epoch_batches
from s4g.data import registry as datasets
from s4g.data.records import EvalSet, TrainSet
from s4g.errors import UserInputError
from s4g.retrieval.evaluate import PROTOCOLS
from s4g.sampling import pack_batches


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


def test_university_packs_with_the_reference_patience():
    # University-1652's reference loop gives up after 512 failed pops, the others after 1024
    assert datasets.train_config("university-d2s").max_failed_pops == 512
    assert datasets.train_config("vigor-same").max_failed_pops == 1024
    # few classes with many pairs each: where the walk gives up decides how much is packed
    pair_class = np.concatenate([np.repeat(np.arange(4), 50), np.repeat([4], 1500)])
    train = TrainSet("u", ["q"] * pair_class.size, ["r"] * 5, pair_class, None, None)
    cfg = datasets.train_config("university-d2s", batch_size=5)
    batches, _ = epoch_batches(cfg, RunData(train, None, None), None, 1)
    patient = pack_batches(pair_class, None, 5, seed=cfg.seed + 1, max_failed_pops=1024)
    assert len(batches) < len(patient)
    np.testing.assert_array_equal(batches, pack_batches(pair_class, None, 5, seed=cfg.seed + 1, max_failed_pops=512))
