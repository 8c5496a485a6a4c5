"""--overwrite replaces only what s4g itself wrote: a dataset file or a user's file of the
same format is never replaced, and a message about it does not suggest --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from probes import assert_unchanged, error_paragraph, snapshot
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth.cache import ensure_world
from s4g.app.synth.writer import write_layout
from s4g.errors import UserInputError
from s4g.model.checkpoint import save_checkpoint
from s4g.model.encoder import build_model

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cvusa")
    write_layout("cvusa", root, locations=40, seed=0, workers=1)
    return root


@pytest.fixture(scope="module")
def run_dir(world, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = {"dataset": "cvusa", "data_root": str(world), "backbone": "convnext_micro", "split_dir": "splits",
              "eval_split": "test", "batch_size": 8, "neighbour_range": 5, "workers": 0,
              "aerial_size": 32, "ground_size": [32, 64]}
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "best.pt", build_model("convnext_micro"), config)
    (run / "metrics.jsonl").write_text('{"epoch": 0, "kind": "eval", "R@1": 1.0}\n'
                                       '{"epoch": 1, "kind": "train", "loss": 2.0, "lr": 0.1, "temperature": 1}\n')
    return run


def assert_refused_without_invitation(result, *said: str) -> str:
    message = error_paragraph(result)
    assert "pass --overwrite" not in message, message
    assert all(s in message for s in said), message
    return message


def test_a_png_of_the_dataset_is_never_replaced(world, run_dir, tmp_path):
    # a PNG tile beside the JPEGs, as VIGOR's satellite tiles are
    tile = world / "bingmap" / "19" / "tile.png"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tile)
    try:
        before = snapshot(world)
        ckpt = ["--checkpoint", run_dir / "best.pt", "--device", "cpu", "--overwrite"]
        result = invoke("eval", *ckpt, "--json", tmp_path / "m.json", "--examples", tile)
        assert_refused_without_invitation(result, "inside", "data root")
        assert_unchanged(before)
    finally:
        tile.unlink()


@pytest.mark.parametrize("name, write", [
    ("photo.png", lambda p: Image.new("RGB", (8, 8)).save(p)),
    ("thesis.pdf", lambda p: p.write_bytes(b"%PDF-1.4\n% a user's document\n%%EOF\n")),
    ("drawing.svg", lambda p: p.write_text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>')),
])
def test_plot_never_replaces_a_users_figure(run_dir, tmp_path, name, write):
    pytest.importorskip("matplotlib")
    target = tmp_path / name
    write(target)
    before = snapshot(target)
    assert_refused_without_invitation(invoke("plot", run_dir, "--out", target, "--overwrite"), "not a", "s4g")
    assert_unchanged(before)
    # its own figure of the same format is replaced with --overwrite
    own = tmp_path / f"own{target.suffix}"
    assert invoke("plot", run_dir, "--out", own).exit_code == 0
    message = error_paragraph(invoke("plot", run_dir, "--out", own))
    assert "pass --overwrite" in message
    assert invoke("plot", run_dir, "--out", own, "--overwrite").exit_code == 0


def test_locate_never_replaces_a_users_geojson_or_picture(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 8)).save(photo)
    survey = tmp_path / "survey.geojson"
    survey.write_text('{"type": "FeatureCollection", "features": []}\n')
    picture = tmp_path / "holiday.png"
    Image.new("RGB", (16, 8), (200, 0, 0)).save(picture)
    before = snapshot(survey, picture, photo)
    locate = ["locate", photo, "--index", tmp_path / "none.npz", "--overwrite"]
    assert_refused_without_invitation(invoke(*locate, "--geojson", survey), "not a GeoJSON file written by s4g")
    assert_refused_without_invitation(invoke(*locate, "--picture", picture), "not a PNG image written by s4g")
    assert_unchanged(before)


def test_synth_preview_replaces_only_its_own_preview(tmp_path):
    foreign = tmp_path / "tile.png"
    Image.new("RGB", (8, 8)).save(foreign)
    before = snapshot(foreign)
    args = ["synth", "--layout", "cvusa", "--locations", "4", "--workers", "1"]
    result = invoke(*args, "--out", tmp_path / "w1", "--preview", foreign, "--overwrite")
    assert_refused_without_invitation(result, "not a PNG image written by s4g")
    assert_unchanged(before)
    assert not (tmp_path / "w1").exists()
    own = tmp_path / "preview.png"
    assert invoke(*args, "--out", tmp_path / "w2", "--preview", own).exit_code == 0
    assert invoke(*args, "--out", tmp_path / "w3", "--preview", own, "--overwrite").exit_code == 0


def test_outputs_inside_the_data_root_are_refused(world, run_dir, tmp_path):
    before = snapshot(world)
    out = world / "nb.npz"
    result = invoke("mine", "--checkpoint", run_dir / "best.pt", "--device", "cpu", "--out", out)
    assert_refused_without_invitation(result, "data root")
    assert not out.exists()
    assert_unchanged(before)


def test_mine_stores_reference_paths_relative_to_the_data_root(world, run_dir, tmp_path):
    import numpy as np

    out = tmp_path / "nb.npz"
    assert invoke("mine", "--checkpoint", run_dir / "best.pt", "--device", "cpu", "--out", out).exit_code == 0
    with np.load(out) as f:
        files = [str(x) for x in f["reference_files"]]
        assert str(f["data_root"]) == str(world)
    assert files and all(not Path(x).is_absolute() and (world / x).is_file() for x in files)


def test_synth_never_deletes_an_earlier_world_without_overwrite(tmp_path):
    world = tmp_path / "world"
    args = ["synth", "--layout", "cvusa", "--locations", "4", "--workers", "1", "--out", world]
    assert invoke(*args).exit_code == 0
    before = snapshot(world)
    message = error_paragraph(invoke(*args[:4], "3", *args[5:]))
    assert "already holds a synthetic cvusa world" in message and "--overwrite" in message
    assert_unchanged(before)
    assert invoke(*args[:4], "3", *args[5:], "--overwrite").exit_code == 0
    (moved,) = tmp_path.glob("world.replaced-*")
    assert {str(moved / Path(p).relative_to(world)): b for p, b in before.items()} == snapshot(moved)


def test_a_cached_world_rewritten_by_synth_is_not_trusted(tmp_path, monkeypatch):
    from s4g.app.synth.cache import default_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = ensure_world(None, locations=6, seed=0)
    assert root == default_root(6, seed=0)
    # the user writes another world over the cached one; the completion marker stays
    assert invoke("synth", "--layout", "cvusa", "--locations", "9", "--workers", "1", "--out", root,
                  "--overwrite").exit_code == 0
    assert ensure_world(None, locations=6, seed=0) == root  # rebuilt, not trusted
    manifest = (root / "s4g_synth_manifest.json").read_text()
    assert '"locations": 6' in manifest
    assert len(list((root / "bingmap" / "19").iterdir())) == 6
    # a folder the user names is refused instead, with the reason
    named = tmp_path / "named"
    ensure_world(named, locations=6, seed=0)
    (named / "bingmap" / "19" / sorted((named / "bingmap" / "19").iterdir())[0].name).unlink()
    with pytest.raises(UserInputError, match="is missing"):
        ensure_world(named, locations=6, seed=0)


def test_a_world_cached_by_an_earlier_s4g_is_checked_by_its_manifest(tmp_path):
    import json

    from s4g.app.synth.cache import world_params

    named = tmp_path / "old"
    ensure_world(named, locations=6, seed=0)
    marker = named / ".s4g-complete"
    marker.write_text(json.dumps(world_params(6, 0), sort_keys=True) + "\n")  # the earlier marker: parameters only
    assert ensure_world(named, locations=6, seed=0) == named.resolve()
    manifest = json.loads((named / "s4g_synth_manifest.json").read_text())
    (named / "s4g_synth_manifest.json").write_text(json.dumps({**manifest, "locations": 9}))
    with pytest.raises(UserInputError, match="rewritten"):
        ensure_world(named, locations=6, seed=0)
