"""`s4g eval` and `s4g mine` end to end on a tiny synthetic CVUSA world, fresh convnext_micro."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reference import haversine_np
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.pictures import CELL, grid_boxes, query_width
from s4g.app.synth.writer import write_layout
from s4g.data.registry import load_eval, load_train
from s4g.model.checkpoint import payload_digest, save_checkpoint
from s4g.model.encoder import build_model
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_files
from s4g.retrieval.evaluate import evaluate_retrieval
from s4g.retrieval.results import pick_examples

runner = CliRunner()
SIZES = {"aerial_size": 64, "ground_size": [32, 128]}  # ConvNeXt needs >= 32 px per side


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cvusa")
    write_layout("cvusa", root, locations=40, seed=0, workers=1, overwrite=True)
    return root


def config_for(root: Path) -> dict:
    return {"dataset": "cvusa", "data_root": str(root), "backbone": "convnext_micro",
            "split_dir": "splits", "eval_split": "test", "batch_size": 8, "neighbour_range": 5,
            "workers": 0, **SIZES}


@pytest.fixture(scope="module")
def checkpoint(world, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint(path, build_model("convnext_micro"), config_for(world))
    return path


def embed(path: Path, files, kind: str):
    from s4g.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    return embed_files(model, files, View(**SIZES), kind, device="cpu", batch_size=5, progress=False)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_eval_prints_and_writes_the_dense_metrics(world, checkpoint, tmp_path):
    out = tmp_path / "m.json"
    res = invoke("eval", "--checkpoint", checkpoint, "--json", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "R@1%" in res.output and "queries" in res.output
    saved = json.loads(out.read_text())
    ev = load_eval("cvusa", world)
    q = embed(checkpoint, ev.query_files, "panorama")
    r = embed(checkpoint, ev.reference_files, "aerial")
    scores = q @ r.T
    ranks = np.array([(s[ev.reference_labels != label] > s[ev.reference_labels == label].max()).sum()
                      for s, label in zip(scores, ev.query_labels)])
    assert saved["queries"] == len(ev.query_files) and saved["dataset"] == "cvusa"
    for k in (1, 5, 10):
        assert saved["metrics"][f"R@{k}"] == pytest.approx(100 * np.mean(ranks < k))
    # CVUSA: Sample4Geo's R@1% counts rank < R // 100 (0 here: fewer than 100 references)
    assert saved["metrics"]["R@1%"] == pytest.approx(100 * np.mean(ranks < len(ev.reference_files) // 100))


def test_eval_writes_per_query_csv_and_examples_picture(world, checkpoint, tmp_path):
    out, table, pic = tmp_path / "m.json", tmp_path / "q.csv", tmp_path / "pic.png"
    res = invoke("eval", "--checkpoint", checkpoint, "--json", out, "--device", "cpu", "--per-query", table,
                 "--examples", pic, "--examples-count", 4, "--examples-seed", 1)
    assert res.exit_code == 0, res.output
    assert "localisation error" in res.output and "median m" in res.output
    metrics = json.loads(out.read_text())["metrics"]
    ev = load_eval("cvusa", world)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    # the rank column is the rank the metrics counted: the dense definition, and R@k from it
    q = embed(checkpoint, ev.query_files, "panorama")
    r = embed(checkpoint, ev.reference_files, "aerial")
    ranks = np.array([int(x["rank"]) for x in rows])
    np.testing.assert_array_equal(ranks, evaluate_retrieval(q, r, ev.query_labels, ev.reference_labels,
                                                            device="cpu").rank)
    for k in (1, 5, 10):
        assert metrics[f"R@{k}"] == pytest.approx(100 * np.mean(ranks < k))
    # metres: from where each panorama was taken to its top-1 tile's centre
    tile = {f: i for i, f in enumerate(ev.reference_files)}
    errors = []
    for i, row in enumerate(rows):
        assert world / row["query"] == Path(ev.query_files[i])
        t = tile[str(world / row["top1_reference"])]
        want = haversine_np(ev.query_lat[i], ev.query_lon[i], ev.reference_lat[t], ev.reference_lon[t])
        assert float(row["error_m"]) == pytest.approx(want, abs=0.006)
        errors.append(want)
    assert metrics["error_median_m"] == pytest.approx(np.median(errors), abs=1e-6)
    assert metrics["within_25m"] == pytest.approx(100 * np.mean(np.array(errors) <= 25))
    # the picture: 4 rows drawn as pick_examples draws them, 5 tiles (+ the truth when missed)
    picked = pick_examples(ranks, 4, 1)
    missed = any(rows[p]["true_reference"] not in [rows[p][f"top{j}_reference"] for j in range(1, 6)]
                 for p in picked)
    with Image.open(pic) as img:
        size = img.size
        img.load()
    with Image.open(ev.query_files[0]) as panorama:
        panorama = panorama.size
    assert size == grid_boxes(4, 5 + missed, query_width([panorama], CELL), CELL, 2)[0]


def test_bare_eval_uses_newest_run_with_best(world, checkpoint, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for name in ("cvusa-20260101-000000", "cvusa-20260301-000000", "vigor-same-20260201-000000"):
        (runs / name).mkdir(parents=True)
        (runs / name / "best.pt").write_bytes(checkpoint.read_bytes())
    (runs / "cvusa-20260401-000000").mkdir()  # newer, but no best.pt yet
    monkeypatch.chdir(tmp_path)
    res = invoke("eval", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "cvusa-20260301-000000" in res.output
    assert (runs / "cvusa-20260301-000000" / "eval-cvusa-test.json").is_file()


def test_mine_writes_neighbours_of_a_dense_argsort(world, checkpoint, tmp_path):
    out = tmp_path / "nb.npz"
    res = invoke("mine", "--checkpoint", checkpoint, "--out", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    with np.load(out, allow_pickle=False) as f:
        nb, files = f["neighbours"], f["reference_files"]
    train = load_train("cvusa", world)
    assert nb.dtype == np.int64 and nb.shape == (train.num_classes, 5)  # k = neighbour_range
    assert [str(world / f) for f in files] == train.reference_files
    q = embed(checkpoint, train.query_files, "panorama")
    r = embed(checkpoint, train.reference_files, "aerial")
    cls = np.zeros_like(r)
    np.add.at(cls, train.pair_class, q)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    scores = cls.astype(np.float64) @ r.T
    np.fill_diagonal(scores, -np.inf)
    want = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    # float32 matmul vs float64 may swap near-equal neighbours; the sets must agree
    assert np.mean([len(set(a) & set(b)) for a, b in zip(nb, want)]) >= 4.5
    assert not (nb == np.arange(train.num_classes)[:, None]).any()


def test_eval_limited_field_of_view(checkpoint, tmp_path):
    out = tmp_path / "fov.json"
    res = invoke("eval", "--checkpoint", checkpoint, "--json", out, "--device", "cpu",
                 "--fov", "90", "--random-heading", "--seed", "3")
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["fov"] == 90 and saved["random_heading"] and saved["seed"] == 3


def rewrite(checkpoint: Path, tmp_path: Path, change) -> Path:
    """A copy of the checkpoint with `change` made to its content and a matching checksum
    (what a run that saved such weights would have written)."""
    payload = torch.load(checkpoint, weights_only=True)
    change(payload)
    payload["sha256"] = payload_digest(payload)
    path = tmp_path / "changed.pt"
    torch.save(payload, path)
    return path


def junk(path: Path) -> Path:
    path.write_text("not a checkpoint")
    return path


def poison(payload):
    for value in payload["model"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda c, t: ["eval", "--checkpoint", t / "missing.pt"], "no such file"),
        (lambda c, t: ["eval", "--checkpoint", junk(t / "bad.pt")], "not a readable PyTorch file"),
        (lambda c, t: ["eval", "--checkpoint", rewrite(c, t, lambda p: p.update(
            backbone="resnet18", architecture={**p["architecture"], "backbone": "resnet18"}))], "missing keys"),
        (lambda c, t: ["eval", "--checkpoint", rewrite(c, t, poison)], "NaN"),
        (lambda c, t: ["eval", "--checkpoint", c, "--split", "nope"], "split"),
        (lambda c, t: ["eval", "--checkpoint", c, "--dataset", "vigor-same"], "--data-root"),
        (lambda c, t: ["eval", "--runs-dir", t / "empty"], "no run with best.pt"),
        (lambda c, t: ["eval", "--checkpoint", c, "--device", "cuda:7"] if not torch.cuda.is_available()
         else ["eval", "--checkpoint", c, "--device", "tpu"], "--device"),
        (lambda c, t: ["mine", "--checkpoint", c, "--out", t / "x.npz", "--k", "999"], "--k"),
        (lambda c, t: ["eval", "--checkpoint", c, "--random-heading"], "--fov"),
        (lambda c, t: ["eval", "--checkpoint", c, "--examples", t / "x.png", "--examples-count", "0"],
         "--examples-count"),
    ],
)
def test_bad_input_exits_2_with_a_message(checkpoint, tmp_path, make_args, message):
    res = invoke(*make_args(checkpoint, tmp_path))
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.npz").exists()


def test_a_folder_given_as_checkpoint_is_named_a_folder(checkpoint, tmp_path):
    run = checkpoint.parent  # holds best.pt
    last_only = tmp_path / "run"
    last_only.mkdir()
    (last_only / "last.pt").write_bytes(checkpoint.read_bytes())
    for args, said in (
        (["eval", "--checkpoint", run],
         f"{run} is a folder, not a file; to use the run's checkpoint, give {run / 'best.pt'}"),
        (["mine", "--checkpoint", last_only, "--out", tmp_path / "x.npz"],
         f"{last_only} is a folder, not a file; to use the run's checkpoint, give {last_only / 'last.pt'}"),
        (["eval", "--checkpoint", tmp_path / "x.npz"], "no such file"),
        (["eval", "--checkpoint", tmp_path], f"{tmp_path} is a folder, not a file; give the file's path"),
    ):
        res = invoke(*args)
        assert res.exit_code == 2, res.output
        assert said in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "x.npz").exists()
