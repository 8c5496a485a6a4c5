"""Images that would fail later are named before work starts: a JPEG cut short (its end-of-image
marker missing, even when an EXIF thumbnail holds one), a text file named .jpg (s4g's own
message), and one list of the image suffixes s4g reads."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from probes import TINY_ARGS, assert_unchanged, error_paragraph, snapshot
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth.cache import ensure_world
from s4g.data._files import IMAGE_SUFFIXES, list_images
from s4g.errors import UserInputError
from s4g.pipeline.images import DECODABLE, image_problem, load_image


def jpeg_bytes(size=(96, 64), seed=0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def with_thumbnail(data: bytes) -> bytes:
    """`data` with an APP1 segment holding a small JPEG (its own FF D9) right after SOI."""
    thumb = b"Exif\x00\x00" + jpeg_bytes((8, 8), seed=1)
    return data[:2] + b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb + data[2:]


@pytest.mark.parametrize("make", [jpeg_bytes, lambda: with_thumbnail(jpeg_bytes())], ids=["plain", "thumbnail"])
def test_a_jpeg_cut_halfway_fails_the_check(tmp_path, make):
    data = make()
    whole, padded, cut = tmp_path / "whole.jpg", tmp_path / "padded.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(data)
    padded.write_bytes(data + b"\x00" * 100)
    cut.write_bytes(data[: len(data) // 2])
    assert image_problem(whole) is None and image_problem(padded) is None
    assert "cut short" in image_problem(cut)


def test_a_jpeg_cut_short_stops_training_before_the_first_evaluation(tmp_path):
    root = ensure_world(tmp_path / "world", locations=60, seed=0)
    first = (root / "splits" / "train-19zl.csv").read_text().splitlines()[0].split(",")[0]
    data = (root / first).read_bytes()
    (root / first).write_bytes(data[: len(data) // 2])
    before = snapshot(root)
    result = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--data-root", str(root), "--epochs", "1",
                                      *TINY_ARGS, "--out", str(tmp_path / "run")])
    message = error_paragraph(result)
    assert str(root / first) in message and "cut short" in message
    assert "epoch 0" not in result.output
    assert_unchanged(before)
    assert not (tmp_path / "run").exists()


def test_a_text_file_named_jpg_gets_s4gs_own_message(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("shopping list\n")
    with pytest.raises(UserInputError) as caught:
        load_image(text)
    assert str(text) in str(caught.value) and "avif" not in str(caught.value).lower()
    assert "JPEG/PNG/WEBP/GIF" in str(caught.value)


def test_one_list_of_image_suffixes(tmp_path):
    for name, fmt in (("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.webp", "WEBP"), ("d.gif", "GIF"), ("e.bmp", "BMP")):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format=fmt)
    listed = list_images(Path(tmp_path))
    assert listed == ["a.jpg", "b.png", "c.webp", "d.gif"]  # .bmp is refused, so it is not listed either
    assert all(image_problem(tmp_path / n) is None and load_image(tmp_path / n).shape == (3, 8, 8) for n in listed)
    assert "BMP" in image_problem(tmp_path / "e.bmp") and set(DECODABLE) == {"JPEG", "PNG", "WEBP", "GIF"}
    assert ".bmp" not in IMAGE_SUFFIXES


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="a system without named pipes")
def test_coords_from_a_pipe(tmp_path):

    fifo = tmp_path / "coords.csv"
    os.mkfifo(fifo)
    text = "lat,lon\n" + "".join(f"{i * 0.01},{i * 0.02}\n" for i in range(10))

    def feed() -> None:
        with open(fifo, "w") as fh:
            fh.write(text)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = tmp_path / "nb.npz"
    result = CliRunner().invoke(app, ["neighbours", "--coords", str(fifo), "--k", "3", "--out", str(out)])
    writer.join(timeout=60)
    assert result.exit_code == 0, result.output
    with np.load(out) as f:
        assert f["idx"].shape == (10, 3)
