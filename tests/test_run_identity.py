"""`train --out DIR --overwrite` moves aside only what is an s4g run, and never the data
root or a folder that holds it (hashes of every file before and after each probe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from probes import TINY_ARGS, assert_unchanged, error_paragraph, snapshot
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth.cache import ensure_world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return ensure_world(tmp_path_factory.mktemp("synth") / "data" / "world", locations=60, seed=0)


def train(world: Path, out: Path, *extra: str):
    args = ["train", "--dataset", "synthetic", "--data-root", world, "--out", out, "--epochs", "1", *TINY_ARGS, *extra]
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_folder_with_a_foreign_config_json_is_not_a_run(world, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"editor": "vim"}))
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    for extra in ((), ("--overwrite",)):
        message = error_paragraph(train(world, folder, *extra))
        assert "no run of s4g train" in message and "pass --overwrite" not in message
        assert_unchanged(before)
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt"]


@pytest.mark.parametrize("where", ["the root", "its parent"])
def test_the_data_root_is_never_a_run_folder(world, where):
    out = world if where == "the root" else world.parent
    (world / "config.json").write_text("{}")  # even when it looks like a run
    try:
        before = snapshot(world.parent)
        message = error_paragraph(train(world, out, "--overwrite"))
        assert "data root" in message
        assert_unchanged(before)
        assert not list(out.glob("replaced-*"))
    finally:
        (world / "config.json").unlink()
