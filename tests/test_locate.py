"""s4g index / s4g locate on a tiny synthetic world, checked against dense nearest neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.jobs.locate import consensus
from s4g.app.pictures import CELL, grid_boxes, query_width
from s4g.app.synth.writer import write_layout
from s4g.data.registry import load_eval
from s4g.errors import UserInputError
from s4g.geo import haversine_m
from s4g.model.checkpoint import load_checkpoint, save_checkpoint
from s4g.model.encoder import build_model
from s4g.pipeline.augment import normalise
from s4g.pipeline.dataset import ImageDataset
from s4g.pipeline.transforms import View
from s4g.retrieval.embed import embed_files
from s4g.retrieval.index import index_paths, open_index

runner = CliRunner()
AERIAL, GROUND = 64, (32, 128)


def make_checkpoint(path, backbone="convnext_micro", seed=0):
    torch.manual_seed(seed)
    config = {"backbone": backbone, "aerial_size": AERIAL, "ground_size": list(GROUND)}
    save_checkpoint(path, build_model(backbone), config)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("locate")
    root = base / "vigor"
    write_layout("vigor", root, locations=24, seed=3, workers=1)
    ckpt = make_checkpoint(base / "micro.pt")
    out = base / "tiles"
    result = runner.invoke(app, ["index", "--checkpoint", str(ckpt), "--dataset", "vigor-same",
                                 "--data-root", str(root), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return {"root": root, "ckpt": ckpt, "index": out, "base": base, "eval": load_eval("vigor-same", root)}


def dense_scores(world, photos):
    """Query × tile scores computed without the index (embeddings of every tile, in full)."""
    model, _ = load_checkpoint(world["ckpt"])
    view = View(AERIAL, GROUND)
    tiles = embed_files(model, world["eval"].reference_files, view, "aerial", device="cpu", progress=False)
    ds = ImageDataset(photos, view, "panorama")
    with torch.inference_mode():
        q = model(normalise(torch.stack([ds[i][0] for i in range(len(ds))]))).numpy()
    return q @ tiles.T, tiles


def locate_json(*args):
    result = runner.invoke(app, ["locate", *map(str, args), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_index_holds_tiles_coordinates_and_model_identity(world):
    index = open_index(world["index"])
    ev = world["eval"]
    assert isinstance(index.embeddings, np.memmap) and index.embeddings.dtype == np.float32
    assert len(index) == len(ev.reference_files)
    assert [index.file_path(i) for i in range(len(index))] == ev.reference_files
    np.testing.assert_array_equal(index.lat, ev.reference_lat)
    np.testing.assert_array_equal(index.lon, ev.reference_lon)
    _, tiles = dense_scores(world, ev.query_files[:1])
    np.testing.assert_allclose(index.embeddings, tiles, atol=1e-6)
    model = index.meta["model"]
    assert model["backbone"] == "convnext_micro" and model["embed_dim"] == 192
    assert model["reference_size"] == [AERIAL, AERIAL] and model["ground_size"] == list(GROUND)
    assert len(model["checkpoint"]["sha256"]) == 64
    # the synthetic VIGOR grid is 48 m; the index measured it
    assert index.meta["tile_spacing_m"] == pytest.approx(48.0, rel=0.02)
    # two plain files: a .npy numpy reads without pickle, and a JSON naming the tiles
    meta_path, npy_path = index_paths(world["index"])
    assert index.path == meta_path and open_index(npy_path).path == meta_path
    np.testing.assert_array_equal(np.load(npy_path, allow_pickle=False), index.embeddings)
    doc = json.loads(meta_path.read_text())
    assert doc["files"] == index.files.tolist() and doc["lat"] == index.lat.tolist()
    assert doc["embeddings_shape"] == list(index.embeddings.shape)


def test_located_tiles_are_the_dense_nearest_tiles(world):
    photos = world["eval"].query_files[:4]
    scores, _ = dense_scores(world, photos)
    found = locate_json("--index", world["index"], *photos, "--k", 5)
    index = open_index(world["index"])
    for item, row_scores in zip(found, scores):
        want = np.argsort(-row_scores, kind="stable")[:5]
        got = [r["row"] for r in item["results"]]
        assert got == want.tolist()
        np.testing.assert_allclose([r["score"] for r in item["results"]], row_scores[want], atol=1e-5)
        top = item["results"][0]
        assert (top["lat"], top["lon"]) == (index.lat[want[0]], index.lon[want[0]])
        agreed = item["consensus"]
        if agreed is not None:  # members lie within the radius of one another's centre
            lat = np.array([item["results"][r - 1]["lat"] for r in agreed["ranks"]])
            lon = np.array([item["results"][r - 1]["lon"] for r in agreed["ranks"]])
            assert len(agreed["ranks"]) >= 2 and agreed["radius_m"] == pytest.approx(96.0, rel=0.02)
            assert haversine_m(agreed["lat"], agreed["lon"], lat, lon).max() <= agreed["radius_m"]


def check_geojson(doc) -> list[dict]:
    """The features of `doc` after checking it against RFC 7946: a FeatureCollection of
    Features whose geometry is null or a Point of two finite numbers, [longitude, latitude]
    within [-180, 180] and [-90, 90], with an object (or null) of properties."""
    assert doc["type"] == "FeatureCollection" and isinstance(doc["features"], list)
    assert "crs" not in doc  # RFC 7946 dropped crs: coordinates are WGS 84
    for f in doc["features"]:
        assert f["type"] == "Feature" and "geometry" in f and isinstance(f.get("properties"), (dict, type(None)))
        g = f["geometry"]
        if g is None:
            continue
        assert g["type"] == "Point" and len(g["coordinates"]) == 2
        lon, lat = g["coordinates"]
        assert all(isinstance(v, float) and np.isfinite(v) for v in (lon, lat))
        assert -180 <= lon <= 180 and -90 <= lat <= 90
    return doc["features"]


def test_geojson_and_picture_of_located_photos(world, tmp_path):
    photos = world["eval"].query_files[:3]
    geo, pic = tmp_path / "out" / "found.geojson", tmp_path / "found.png"
    found = locate_json("--index", world["index"], *photos, "--k", 4, "--geojson", geo, "--picture", pic)
    features = check_geojson(json.loads(geo.read_text()))
    index = open_index(world["index"])
    candidates = [f for f in features if f["properties"]["kind"] == "candidate"]
    assert len(candidates) == 3 * 4
    for item in found:
        mine = [f for f in candidates if f["properties"]["photo"] == item["photo"]]
        assert [f["properties"]["rank"] for f in mine] == [1, 2, 3, 4]
        for f, r in zip(mine, item["results"]):
            lon, lat = f["geometry"]["coordinates"]
            # [lon, lat] order: Chicago's lon (-87.6) and lat (41.9) cannot be confused
            assert (lon, lat) == (index.lon[r["row"]], index.lat[r["row"]]) and lat != lon
            assert f["properties"]["tile"] == r["file"] and f["properties"]["score"] == r["score"]
        agreed = [f for f in features
                  if f["properties"]["kind"] == "consensus" and f["properties"]["photo"] == item["photo"]]
        if item["consensus"] is None:
            assert not agreed
        else:
            assert agreed[0]["geometry"]["coordinates"] == [item["consensus"]["lon"], item["consensus"]["lat"]]
    with Image.open(pic) as img:
        assert img.format == "PNG"
        with Image.open(photos[0]) as photo:
            q_w = query_width([photo.size], CELL)
        assert img.size == grid_boxes(3, 4, q_w, CELL, 2)[0]


def test_float16_index_and_table_output(world):
    out = world["base"] / "half"
    result = runner.invoke(app, ["index", "--checkpoint", str(world["ckpt"]), "--dataset", "vigor-same",
                                 "--data-root", str(world["root"]), "--out", str(out), "--float16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    index = open_index(out)
    assert index.embeddings.dtype == np.float16 and index.meta["dtype"] == "float16"
    photo = world["eval"].query_files[0]
    scores, _ = dense_scores(world, [photo])
    got = locate_json("--index", out, photo, "--k", 3)[0]["results"]
    np.testing.assert_allclose([r["score"] for r in got], np.sort(scores[0])[::-1][:3], atol=2e-3)
    result = runner.invoke(app, ["locate", "--index", str(out), photo, "--k", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "consensus" in result.output and "rank" in result.output


def test_index_from_a_csv_of_tiles(world, tmp_path):
    ev = world["eval"]
    rows = ["File,Latitude,Longitude"] + [
        f"{p},{la},{lo}" for p, la, lo in zip(ev.reference_files[:6], ev.reference_lat, ev.reference_lon)
    ]
    csv = tmp_path / "tiles.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "csv.json"
    args = ["index", "--checkpoint", str(world["ckpt"]), "--images", "/", "--coords", str(csv), "--out", str(out),
            "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--overwrite"])  # an index s4g wrote is one it may replace
    assert result.exit_code == 0, result.output
    index = open_index(out)
    np.testing.assert_allclose(index.embeddings, open_index(world["index"]).embeddings[:6], atol=1e-6)
    np.testing.assert_array_equal(index.lat, ev.reference_lat[:6])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,x,y\na.png,1,2\n", "has no column lat"),
        ("file,lat,lon\n{tile},north,2\n", "line 2"),
        ("file,lat,lon\n{tile},95,2\n", "out of range"),
        ("file,lat,lon\nmissing.png,1,2\n", "does not exist"),
    ],
)
def test_bad_coordinate_csv_exits_2(world, tmp_path, text, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(text.format(tile=world["eval"].reference_files[0].lstrip("/")))
    result = runner.invoke(app, ["index", "--checkpoint", str(world["ckpt"]), "--images", "/",
                                 "--coords", str(csv), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "bad.csv" in result.output and message in result.output
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.npy").exists()


def test_dataset_without_coordinates_lists_tiles_without_position(tmp_path):
    root = tmp_path / "uni"
    write_layout("university", root, locations=4, seed=1, workers=1)
    ckpt = make_checkpoint(tmp_path / "micro.pt")
    out = tmp_path / "uni"
    result = runner.invoke(app, ["index", "--checkpoint", str(ckpt), "--dataset", "university-d2s",
                                 "--data-root", str(root), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "no tile coordinates" in result.output
    index = open_index(out)
    assert np.isnan(index.lat).all() and index.meta["tile_spacing_m"] is None
    drone = load_eval("university-d2s", root).query_files[0]
    item = locate_json("--index", out, drone, "--k", 2)[0]
    assert [r["lat"] for r in item["results"]] == [None, None] and item["consensus"] is None
    result = runner.invoke(app, ["locate", "--index", str(out), drone, "--geojson", str(tmp_path / "x.geojson")])
    assert result.exit_code == 2 and "no tile coordinates" in result.output
    assert not (tmp_path / "x.geojson").exists()


def test_index_made_by_another_model_is_refused(world, tmp_path):
    photo = world["eval"].query_files[0]
    other = make_checkpoint(tmp_path / "resnet.pt", backbone="resnet18")
    result = runner.invoke(app, ["locate", "--index", str(world["index"]), "--checkpoint", str(other), photo])
    assert result.exit_code == 2
    assert "convnext_micro" in result.output and "resnet18" in result.output and "512-d" in result.output
    retrained = make_checkpoint(tmp_path / "micro2.pt", seed=1)
    result = runner.invoke(app, ["locate", "--index", str(world["index"]), "--checkpoint", str(retrained), photo])
    assert result.exit_code == 2 and "not the checkpoint" in result.output
    # the same bytes under another name are accepted
    copy = tmp_path / "copy.pt"
    copy.write_bytes(world["ckpt"].read_bytes())
    assert locate_json("--index", world["index"], "--checkpoint", copy, photo)[0]["results"]


def test_bad_inputs_exit_2_naming_the_file(world, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    result = runner.invoke(app, ["locate", "--index", str(world["index"]), str(bad)])
    assert result.exit_code == 2 and "broken.jpg" in result.output
    not_index = tmp_path / "notes.json"
    not_index.write_text('{"a": 1}')
    result = runner.invoke(app, ["locate", "--index", str(not_index), world["eval"].query_files[0]])
    assert result.exit_code == 2 and "notes.json" in result.output and "not an s4g index" in result.output
    result = runner.invoke(app, ["locate", "--index", str(tmp_path / "absent"), world["eval"].query_files[0]])
    assert result.exit_code == 2 and "absent.json" in result.output
    result = runner.invoke(app, ["index", "--checkpoint", str(world["ckpt"]), "--out", str(tmp_path / "i")])
    assert result.exit_code == 2 and "--images" in result.output
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 32, 3), np.uint8)).save(photo)
    result = runner.invoke(app, ["locate", "--index", str(world["index"]), str(photo),
                                 "--fov", "90", "--heading", "10"])
    assert result.exit_code == 2 and "--heading" in result.output


def test_consensus_picks_the_heaviest_close_group():
    # rank 1 alone in the west; ranks 2-4 within 30 m of each other in the east
    lat = np.array([0.0, 0.0, 0.0002, 0.0001, 0.01])
    lon = np.array([-0.01, 0.01, 0.01, 0.0101, 0.0])
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3])
    got = consensus(lat, lon, scores, radius_m=50.0)
    assert got["ranks"] == [2, 3, 4]
    assert got["lat"] == pytest.approx((0.8 * 0 + 0.6 * 0.0002 + 0.4 * 0.0001) / 1.8, abs=1e-9)
    assert got["lon"] == pytest.approx((0.8 * 0.01 + 0.6 * 0.01 + 0.4 * 0.0101) / 1.8, abs=1e-9)
    assert consensus(lat, lon, scores, radius_m=5.0) is None  # nobody agrees
    assert consensus(np.full(5, np.nan), lon, scores, radius_m=1e6) is None
    # across the antimeridian the mean stays between the two tiles
    got = consensus(np.array([0.0, 0.0]), np.array([179.9999, -179.9999]), np.array([0.5, 0.5]), 100.0)
    assert abs(got["lon"]) == pytest.approx(180.0, abs=1e-6)


@pytest.mark.parametrize("change", ["flip a byte", "flip a row's sign", "truncate", "remove"])
def test_changed_embeddings_are_refused_naming_the_file(world, tmp_path, change):
    # a changed .npy would silently move locate's answers: the recorded SHA-256 refuses it
    meta_path, npy_path = index_paths(world["index"])
    copy_meta, copy_npy = index_paths(tmp_path / "copy")
    copy_meta.write_bytes(meta_path.read_bytes())
    data = bytearray(npy_path.read_bytes())
    if change == "flip a byte":
        data[-5] ^= 0x01
    elif change == "flip a row's sign":
        emb = np.load(npy_path)
        emb[3] = -emb[3]
        header = len(data) - emb.nbytes
        data[header:] = emb.tobytes()
    elif change == "truncate":
        data = data[: len(data) // 2]
    if change != "remove":
        copy_npy.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match="copy"):
        open_index(copy_meta)
    result = runner.invoke(app, ["locate", "--index", str(copy_meta), world["eval"].query_files[0], "--device", "cpu"])
    assert result.exit_code == 2 and "copy.npy" in result.output and "rebuild" in result.output


def test_index_is_not_written_over_other_files(world, tmp_path):
    other = tmp_path / "mine.npy"
    np.save(other, np.zeros(3))
    result = runner.invoke(app, ["index", "--checkpoint", str(world["ckpt"]), "--dataset", "vigor-same",
                                 "--data-root", str(world["root"]), "--out", str(tmp_path / "mine"), "--device", "cpu"])
    assert result.exit_code == 2 and "mine.npy" in result.output
    np.testing.assert_array_equal(np.load(other), np.zeros(3))
    assert not (tmp_path / "mine.json").exists()
