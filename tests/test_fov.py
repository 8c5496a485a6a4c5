"""Limited field of view, end to end: the crop geometry shared by train, eval and locate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets
from s4g.data.registry import load_eval
from s4g.errors import UserInputError
from s4g.model.checkpoint import load_checkpoint, save_checkpoint
from s4g.model.encoder import build_model
from s4g.pipeline.augment import normalise
from s4g.pipeline.dataset import ImageDataset
from s4g.pipeline.images import load_image
from s4g.pipeline.transforms import View, crop_fov, fov_size, fov_width, resize
from s4g.retrieval.embed import embed_eval_set

runner = CliRunner()
AERIAL, GROUND = 64, (32, 128)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("fov")
    root = base / "cvusa"
    write_layout("cvusa", root, locations=16, seed=2, workers=1)
    torch.manual_seed(0)
    config = {"dataset": "cvusa", "data_root": str(root), "backbone": "convnext_micro",
              "aerial_size": AERIAL, "ground_size": list(GROUND), "batch_size": 8}
    save_checkpoint(base / "micro.pt", build_model("convnext_micro"), config)
    return {"root": root, "ckpt": base / "micro.pt", "base": base, "eval": load_eval("cvusa", root)}


def _png(path, array):
    Image.fromarray(array).save(path)  # lossless, so rolled copies compare exactly
    return str(path)


def _by_hand(model, image: torch.Tensor, fov, heading, size) -> np.ndarray:
    with torch.inference_mode():
        return model(normalise(resize(crop_fov(image, fov, heading), size))[None]).numpy()[0]


def test_fov_size_keeps_the_panorama_scale():
    assert fov_size((140, 768), 90) == (140, 192)
    assert fov_size((140, 768), 180) == (140, 384)
    assert fov_size((140, 768), 360) == fov_size((140, 768), None) == (140, 768)
    assert fov_size((8, 10), 1) == (8, 1)
    for bad in (0, -90, 361):
        with pytest.raises(UserInputError, match="--fov"):
            fov_size((140, 768), bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4000), st.floats(1e-3, 360.0))
@example(10, 1.0)  # under half a column: still one
@example(16, 33.75)  # one and a half columns
def test_fov_width_is_the_width_crop_fov_cuts(width, fov):
    """fov_size and crop_fov agree on the width, which rounds halves up."""
    w = fov_width(width, fov)
    assert w == max(1, min(width, int(width * fov / 360 + 0.5)))
    assert 1 <= w <= width and fov_size((3, width), fov) == (3, w)
    assert crop_fov(torch.zeros(1, 1, width), fov, 37.0).shape[-1] == w


def test_view_sizes_by_kind():
    view = View(64, (32, 128), fov=90, heading_deg=45.0, random_heading=True, seed=3)
    assert view.size("panorama") == (32, 32) and view.size("drone") == (32, 128) and view.size("aerial") == (64, 64)
    assert view.fov_of("panorama") == 90 and view.fov_of("drone") is None and view.fov_of("aerial") is None
    assert view.whole() == View(64, (32, 128), seed=3) and view.whole().size("panorama") == (32, 128)
    with pytest.raises(ValueError, match="unknown image kind"):
        view.size("street")
    with pytest.raises(UserInputError, match="--fov"):
        View(64, (32, 128), fov=400)


def test_heading_turn_equals_a_circular_shift_of_the_file(tmp_path):
    pano = np.random.default_rng(0).integers(0, 256, (16, 72, 3), dtype=np.uint8)
    files = [_png(tmp_path / f"r{k}.png", np.roll(pano, -k, axis=1)) for k in (0, 5, 40)]
    for k, rolled in zip((0, 5, 40), files):
        turned = ImageDataset(files[:1], View(16, (16, 72), fov=90, heading_deg=360.0 * k / 72), "panorama")
        north = ImageDataset([rolled], View(16, (16, 72), fov=90, heading_deg=0.0), "panorama")
        assert torch.equal(turned[0][0], north[0][0])
    # 360 degrees is the whole panorama at any heading origin: identity at heading 0
    assert torch.equal(ImageDataset(files[:1], View(16, (16, 72), fov=360), "panorama")[0][0],
                       ImageDataset(files[:1], View(16, (16, 72)), "panorama")[0][0])
    image = load_image(files[0])
    assert torch.equal(crop_fov(image, 360, 0), image)


def test_eval_embeds_queries_at_the_cropped_scale(world):
    model, _ = load_checkpoint(world["ckpt"])
    ev = world["eval"]
    q, r = embed_eval_set(model, ev, View(AERIAL, GROUND, fov=90), device="cpu", progress=False)
    want = np.stack([_by_hand(model, load_image(f), 90, 0.0, (32, 32)) for f in ev.query_files])
    np.testing.assert_allclose(q, want, atol=1e-5)
    rand = View(AERIAL, GROUND, fov=90, random_heading=True, seed=3)
    q_rand, _ = embed_eval_set(model, ev, rand, device="cpu", progress=False)
    headings = [ImageDataset(ev.query_files, rand, "panorama").heading(i) for i in range(len(ev.query_files))]
    assert len(set(headings)) == len(headings)
    want = np.stack([_by_hand(model, load_image(f), 90, h, (32, 32)) for f, h in zip(ev.query_files, headings)])
    np.testing.assert_allclose(q_rand, want, atol=1e-5)


def test_eval_cli_fov_options(world, tmp_path):
    outs = []
    random_heading = ["--random-heading", "--seed", "4"]
    for name, extra in (("north", []), ("rand", random_heading), ("rand2", random_heading)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["eval", "--checkpoint", str(world["ckpt"]), "--fov", "90", "--device", "cpu",
                                     "--json", str(out), *extra])
        assert result.exit_code == 0, result.output
        outs.append(json.loads(out.read_text()))
    assert outs[0]["fov"] == 90 and outs[0]["random_heading"] is False
    assert outs[1]["random_heading"] is True and outs[1]["metrics"] == outs[2]["metrics"]
    result = runner.invoke(app, ["eval", "--checkpoint", str(world["ckpt"]), "--fov", "400", "--device", "cpu"])
    assert result.exit_code == 2 and "--fov" in result.output


def test_training_pairs_are_cropped_at_the_same_scale(world, monkeypatch):
    from s4g.app.jobs.train.data import load_run_data

    cfg = datasets.train_config("cvusa", data_root=str(world["root"]), aerial_size=AERIAL, ground_size=GROUND,
                                fov=90, random_heading=True, batch_size=4, sampling="random", workers=0)
    pairs = load_run_data(cfg, datasets.get("cvusa"), with_eval=False).pairs
    ground, aerial, *_ = pairs[0]
    assert ground.shape == (3, 32, 32) and aerial.shape == (3, AERIAL, AERIAL)
    # the command line hands --fov / --random-heading to the run config
    import s4g.app.jobs.train

    seen = []
    monkeypatch.setattr(s4g.app.jobs.train, "run", lambda cfg, **kwargs: seen.append(cfg) or "x")
    result = runner.invoke(app, ["train", "--dataset", "cvusa", "--data-root", str(world["root"]),
                                 "--fov", "90", "--random-heading"])
    assert result.exit_code == 0, result.output
    assert seen[0].fov == 90 and seen[0].random_heading is True


def test_locate_fov_and_heading(world, tmp_path):
    ev = world["eval"]
    index = tmp_path / "tiles"  # tiles.json + tiles.npy
    result = runner.invoke(app, ["index", "--checkpoint", str(world["ckpt"]), "--dataset", "cvusa",
                                 "--data-root", str(world["root"]), "--out", str(index), "--device", "cpu"])
    assert result.exit_code == 0, result.output

    def scores(*args):
        result = runner.invoke(app, ["locate", "--index", str(index), "--json", "--device", "cpu", "--k", "3",
                                     *map(str, args)])
        assert result.exit_code == 0, result.output
        return [[r["score"] for r in item["results"]] for item in json.loads(result.stdout)]

    pano = load_image(ev.query_files[0]).permute(1, 2, 0).numpy()
    width = pano.shape[1]
    # a panorama whose centre faces east (90 deg) is the north-centred one rolled by W/4
    east = _png(tmp_path / "east.png", np.roll(pano, -width // 4, axis=1))
    north = _png(tmp_path / "north.png", pano)
    np.testing.assert_allclose(scores(east, "--heading", 90), scores(north), atol=1e-5)
    # a 90-degree photo is fed at the ground height and a quarter of the width
    photo = _png(tmp_path / "photo.png", np.ascontiguousarray(pano[:, : width // 4]))
    model, _ = load_checkpoint(world["ckpt"])
    emb = _by_hand(model, load_image(photo), 360, 0.0, (32, 32))
    tiles = np.load(tmp_path / "tiles.npy").astype(np.float32)
    np.testing.assert_allclose(scores(photo, "--fov", 90)[0], np.sort(tiles @ emb)[::-1][:3], atol=1e-5)
