"""Wrong or damaged input is refused before heavy work, with a message that helps: swapped
dataset columns (with the line), unusable training images before the first evaluation, a
byte-order mark accepted everywhere, and every flag named as spelled on the command line."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from probes import TINY_ARGS, assert_unchanged, error_paragraph, snapshot, squash
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.cli.app import user_error_message
from s4g.app.synth.cache import ensure_world
from s4g.app.synth.writer import write_layout
from s4g.data.registry import load_eval, load_train
from s4g.errors import UserInputError
from s4g.pipeline.dataset import PairDataset
from s4g.pipeline.images import find_bad_images, image_problem, load_image
from s4g.pipeline.transforms import View

runner = CliRunner()
BOM = "\ufeff"


@pytest.fixture(scope="module")
def cvusa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cvusa")
    write_layout("cvusa", root, locations=10, seed=1, workers=1)
    return root


@pytest.fixture(scope="module")
def vigor(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vigor")
    write_layout("vigor", root, locations=16, seed=1, workers=1)
    return root


def copy_of(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_cvusa_split_with_swapped_columns(cvusa, tmp_path):
    root = copy_of(cvusa, tmp_path / "cvusa")
    split = root / "splits" / "train-19zl.csv"
    rows = [line.split(",") for line in split.read_text().splitlines()]
    rows[2][:2] = rows[2][1], rows[2][0]
    split.write_text("".join(",".join(r) + "\n" for r in rows))
    before = snapshot(root)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", "cvusa", "--data-root", str(root), "--out", str(out),
                                 "--backbone", "convnext_micro", "--no-pretrained", "--device", "cpu"])
    message = error_paragraph(result)
    assert f"{str(split)!r} line 3" in message and "swapped" in message
    assert_unchanged(before)
    assert not out.exists()


def test_vigor_rows_with_swapped_columns(vigor, tmp_path):
    root = copy_of(vigor, tmp_path / "vigor")
    listed = next((root / "splits").glob("*/same_area_balanced_train.txt"))
    rows = [line.split() for line in listed.read_text().splitlines()]
    rows[1][:2] = rows[1][1], rows[1][0]
    listed.write_text("".join(" ".join(r) + "\n" for r in rows))
    with pytest.raises(UserInputError, match=rf"{re.escape(str(listed))}' line 2: column 1 names 'satellite_"):
        load_train("vigor-same", root)
    tiles = next((root / "splits").glob("*/satellite_list.txt"))
    lines = tiles.read_text().splitlines()
    tiles.write_text("\n".join([lines[0], "pano_0001.jpg", *lines[1:]]) + "\n")
    with pytest.raises(UserInputError, match="line 2: tile name 'pano_0001.jpg'"):
        load_train("vigor-same", root)


def test_a_byte_order_mark_is_accepted_everywhere(cvusa, vigor, tmp_path):
    roots = {"cvusa": copy_of(cvusa, tmp_path / "cvusa"), "vigor-same": copy_of(vigor, tmp_path / "vigor")}
    marked = [*roots["cvusa"].glob("splits/*.csv"), *roots["vigor-same"].glob("splits/*/*.txt")]
    for path in marked:
        path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")
    for name, root in roots.items():
        src = cvusa if name == "cvusa" else vigor
        moved = [f.replace(str(src), str(root)) for f in load_train(name, src).query_files]
        assert load_train(name, root).query_files == moved
        assert len(load_eval(name, root).reference_files) == len(load_eval(name, src).reference_files)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(BOM + "query,reference,lat,lon\n" + "".join(
        f"{q},{r},0,{i}\n" for i, (q, r) in enumerate(zip(load_train("cvusa", cvusa).query_files,
                                                           load_train("cvusa", cvusa).reference_files))),
        encoding="utf-8")
    assert load_train("csv", pairs).num_pairs == load_train("cvusa", cvusa).num_pairs


def test_image_headers_are_checked(tmp_path):
    Image.new("RGB", (8, 4)).save(tmp_path / "ok.jpg")
    Image.new("RGB", (8, 4)).save(tmp_path / "tile.bmp")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    try:
        Image.new("RGB", (8, 4)).save(odd)
    except (OSError, UnicodeError):
        odd = tmp_path / "ok.jpg"  # a file system that takes UTF-8 names only
    assert image_problem(tmp_path / "ok.jpg") is None and image_problem(odd) is None
    assert load_image(odd).shape == (3, 4, 8)
    assert "BMP" in image_problem(tmp_path / "tile.bmp")
    assert "not an image" in image_problem(tmp_path / "empty.jpg")
    assert image_problem(tmp_path / "missing.jpg") == "no such file"
    files = [str(tmp_path / n) for n in ("ok.jpg", "tile.bmp", "text.png", "missing.jpg")] * 200
    seen = []
    bad = find_bad_images(files, threads=3, advance=seen.append)
    assert [f for f, _ in bad] == [f for f in files if not f.endswith("ok.jpg")] and sum(seen) == len(files)


@pytest.fixture()
def damaged_world(tmp_path) -> tuple[Path, str]:
    """A tiny synthetic world with one training panorama cut short."""
    root = ensure_world(tmp_path / "world", locations=60, seed=0)
    first = (root / "splits" / "train-19zl.csv").read_text().splitlines()[0].split(",")[1]
    (root / first).write_bytes((root / first).read_bytes()[:20])
    return root, str(root / first)


def test_a_bad_training_image_is_found_before_the_first_evaluation(damaged_world, tmp_path):
    root, bad = damaged_world
    args = ["train", "--dataset", "synthetic", "--data-root", str(root), "--epochs", "1", *TINY_ARGS]
    before = snapshot(root)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    message = error_paragraph(result)
    assert bad in message and "--skip-bad-images" in message and "--no-check-images" in message
    assert "epoch 0" not in result.output and "colour-histogram" not in result.output
    assert_unchanged(before)
    assert not (tmp_path / "run").exists()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "skip"), "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    assert squash("training images cannot be used") in squash(result.output) and squash(bad) in squash(result.output)


def test_a_bad_image_met_while_training_names_the_flag(damaged_world):
    root, bad = damaged_world
    train = load_train("cvusa", root)
    pairs = PairDataset(train, View(32, (32, 64)), augment=False)
    with pytest.raises(UserInputError, match="pass --skip-bad-images") as caught:
        pairs[train.query_files.index(bad)]
    # the same error raised in a DataLoader worker comes back wrapped; the CLI shows the message
    wrapped = UserInputError(f"Caught UserInputError in DataLoader worker process 0.\nOriginal Traceback (most "
                             f"recent call last):\n  File \"x.py\", line 1\n"
                             f"s4g.errors.UserInputError: {caught.value}\n")
    assert user_error_message(wrapped) == str(caught.value)


def test_locate_refuses_a_heading_that_is_not_a_number(tmp_path):
    for option, value in (("--heading", "nan"), ("--heading", "inf"), ("--radius", "nan"), ("--fov", "nan")):
        result = runner.invoke(app, ["locate", str(tmp_path / "photo.jpg"), "--index", str(tmp_path / "none.npz"),
                                     option, value])
        assert option in error_paragraph(result), option


def test_training_options_that_are_not_numbers(tmp_path):
    for option in ("--lr", "--weight-decay", "--warmup-epochs"):
        result = runner.invoke(app, ["train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), option, "nan"])
        assert f"{option} must be a finite number" in error_paragraph(result)
