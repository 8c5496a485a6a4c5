"""The synthetic world and the four layouts `s4g synth` writes (tiny worlds, CPU, seconds)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth import render as sr
from s4g.app.synth import world as sw
from s4g.app.synth.writer import write_layout
from s4g.errors import UserInputError
from s4g.retrieval.baseline import colour_histogram_recall

EARTH_R = 6_371_008.8


@pytest.fixture(scope="module")
def world() -> sw.World:
    return sw.make_world((160, 160), 5)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_world_is_deterministic_and_seed_dependent():
    a, b, c = sw.make_world((96, 96), 1), sw.make_world((96, 96), 1), sw.make_world((96, 96), 2)
    assert np.array_equal(a.height, b.height) and np.array_equal(a.top, b.top) and np.array_equal(a.wall, b.wall)
    assert not np.array_equal(a.top, c.top)
    assert a.height.dtype == np.float32 and a.top.dtype == np.uint8 and a.top.shape == (96, 96, 3)


def test_rotating_the_world_rotates_the_aerial_and_shifts_the_panorama(world):
    """np.rot90(maps, k) (east -> north) <=> aerial np.rot90(., k) and panorama roll -k*W/4."""
    (y, x), = sw.road_points(world, 1, 10.0, 40.0, np.random.default_rng(0))
    kw = {"width_m": 64.0}
    aerial, pano = sr.render_pair(world, y, x, 48, (24, 96), **kw)
    assert (pano[:12] != pano[12:].mean()).any()  # not a blank image
    W = pano.shape[1]
    for k in (1, 2, 3):
        turned = sw.rotate_world(world, k)
        a2, p2 = sr.render_pair(turned, *sw.rotate_point(world.shape, y, x, k), 48, (24, 96), **kw)
        assert np.array_equal(a2, np.rot90(aerial, k))
        want = np.roll(pano, -k * W // 4, axis=1).astype(int)
        diff = np.abs(p2.astype(int) - want)
        assert diff.mean() < 0.5 and (diff.max(axis=2) > 3).mean() < 0.005, k
        wrong = np.abs(p2.astype(int) - np.roll(pano, k * W // 4, axis=1).astype(int))
        if k != 2:  # the opposite sign must not match: the test can tell the directions apart
            assert wrong.mean() > 5 * max(diff.mean(), 0.1)
        # a drone looking along heading h sees after the turn what it saw along h - 90 k
        d1 = sr.render_oblique(world, y, x, 32, 30.0, 50.0, 40.0).astype(int)
        d2 = sr.render_oblique(turned, *sw.rotate_point(world.shape, y, x, k), 32, 30.0 - 90.0 * k, 50.0, 40.0)
        assert (np.abs(d2.astype(int) - d1).max(axis=2) > 3).mean() < 0.01


def test_panorama_centre_column_faces_north():
    """A lone tower north of the camera appears in the centre column, one east to its right."""
    w = sw.make_world((100, 100), 0)
    h = np.zeros((100, 100), np.float32)
    h[20:30, 45:55] = 30.0  # north of (50.5, 50.5)
    h[45:55, 75:85] = 30.0  # east
    w = sw.World(h, w.top, w.wall, w.kind, w.sun_azimuth, w.sun_elevation, w.buildings)
    p = sr.render_panorama(w, 50.5, 50.5, (32, 128), range_m=48.0)
    sky = p[4].astype(int)  # a row above the horizon: towers cover the sky there
    blocked = np.abs(sky - p[4, 0].astype(int)).sum(axis=1) > 20
    assert blocked[62:66].all() and blocked[94:98].all() and not blocked[30:34].any()


def test_first_hit_matches_a_brute_force_march():
    rng = np.random.default_rng(0)
    for _ in range(200):
        C, K, R = (int(v) for v in rng.integers(1, 9, 3))
        s_top = rng.normal(size=(C, K)).round(1)
        thr = np.sort(rng.normal(size=R).round(1) + rng.random(R) * 1e-3)[::-1]
        brute = [[next((k for k in range(K) if s_top[c, k] >= thr[r]), K) for c in range(C)] for r in range(R)]
        assert np.array_equal(sr._first_hit(s_top, thr), np.array(brute))


def test_palettes_differ_in_how_roofs_and_walls_are_coloured():
    kinds = {}
    for palette in ("unique", "paired", "shared"):
        w = sw.make_world((320, 320), 4, palette=palette, shading=0.0, shadows=False)
        b = w.kind == sw.BUILDING
        kinds[palette] = (np.unique(w.wall[b].reshape(-1, 3), axis=0).shape[0],
                          float(np.abs(w.wall[b].astype(int) - w.top[b].astype(int)).mean()))
    assert kinds["unique"][1] < 12 and kinds["paired"][1] < 12  # roof colour = wall colour (+ texture)
    assert kinds["shared"][1] > 30  # drawn independently
    assert kinds["shared"][0] <= 10 and kinds["paired"][0] <= 16 < kinds["unique"][0]


def test_drone_view_and_road_points(world):
    img = sr.render_oblique(world, 80.0, 80.0, 32, 45.0, 50.0, 48.0)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5
    pts = sw.road_points(world, 5, 20.0, 10.0, np.random.default_rng(1))
    assert len(pts) >= 2
    d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    assert d[np.triu_indices(len(pts), 1)].min() >= 20.0
    assert (world.kind[pts[:, 0].astype(int), pts[:, 1].astype(int)] == sw.ROAD).all()
    with pytest.raises(UserInputError, match="palette"):
        sw.make_world((32, 32), 0, palette="rainbow")


def test_cvusa_layout_exact_names_and_determinism(tmp_path):
    m = write_layout("cvusa", tmp_path / "a", locations=6, seed=3, workers=1)
    root = tmp_path / "a"
    rows = {s: list(csv.reader(open(root / f"splits/{s}-19zl.csv"))) for s in ("train", "val")}
    assert len(rows["train"]) + len(rows["val"]) == 6 and len(rows["val"]) == 1
    ids = set()
    for r in rows["train"] + rows["val"]:
        i = r[0].split("/")[-1][:-4]
        assert len(i) == 7 and r == [f"bingmap/19/{i}.jpg", f"streetview/panos/{i}.jpg", f"annotations/{i}.png"]
        assert (root / r[0]).is_file() and (root / r[1]).is_file()
        ids.add(int(i))
    assert ids == set(range(1, 7))
    loc = list(csv.reader(open(root / "split_locations/all.csv")))
    assert len(loc) == 6 and all(len(r) == 5 for r in loc)
    for rec in m["splits"]["train"] + m["splits"]["val"]:  # row id-1 holds the id's coordinates
        assert float(loc[rec["id"] - 1][2]) == pytest.approx(rec["lat"], abs=1e-7)
    lat, lon = np.array([[float(r[0]), float(r[1])] for r in loc]).T
    y, x = np.radians(lat) * EARTH_R, np.radians(lon) * EARTH_R * math.cos(math.radians(lat[0]))
    d = np.hypot(y[:, None] - y, x[:, None] - x) + np.eye(6) * 1e9
    assert d.min() >= 96.0  # sparse: neighbours at least a tile apart
    from PIL import Image

    assert Image.open(root / rows["val"][0][0]).size == (128, 128)
    assert Image.open(root / rows["val"][0][1]).size == (308, 56)
    write_layout("cvusa", tmp_path / "b", locations=6, seed=3, workers=2)
    write_layout("cvusa", tmp_path / "c", locations=6, seed=4, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_real_sizes_are_the_releases(tmp_path):
    from PIL import Image

    m = write_layout("cvusa", tmp_path, locations=2, size="real", workers=1)
    rec = m["splits"]["val"][0]
    assert Image.open(tmp_path / rec["reference"]).size == (750, 750)
    assert Image.open(tmp_path / rec["query"]).size == (1232, 224)
    assert m["image_sizes"] == {"aerial": [750, 750], "ground": [224, 1232]}


def test_cvact_layout_mat_by_name_and_missing_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    m = write_layout("cvact", tmp_path, locations=12, seed=0, cvact_missing=2, workers=1)
    mat = scipy_io.loadmat(tmp_path / "ACT_data.mat")
    ids = [str(s).strip() for s in mat["panoIds"]]
    assert mat["utm"].shape == (len(ids), 2)
    tr = mat["trainSet"]["trainInd"][0][0].ravel().astype(int) - 1
    va = mat["valSet"]["valInd"][0][0].ravel().astype(int) - 1
    assert mat["trainSet"][0][0][1].shape[1] == 2  # positional field 1 is a decoy, not indices
    s = m["splits"]
    omitted = {r["id"]: r for r in s["omitted"]}
    for split, rows in (("train", tr), ("val", va)):
        gone = {i for i, r in omitted.items() if r["split"] == split}  # still listed in the .mat
        assert {ids[i] for i in rows} == {r["id"] for r in s[split]} | gone
    for r in s["train"] + s["val"]:
        assert r["query"] == f"ANU_data_small/streetview/{r['id']}_grdView.jpg"
        assert r["reference"] == f"ANU_data_small/satview_polish/{r['id']}_satView_polish.jpg"
        assert (tmp_path / r["query"]).is_file() and (tmp_path / r["reference"]).is_file()
        assert np.allclose(mat["utm"][ids.index(r["id"])], r["utm"])
    assert len(omitted) == 3 and all(not (tmp_path / r["missing"]).exists() for r in omitted.values())
    grd = {p.name[:-len("_grdView.jpg")] for p in (tmp_path / "ANU_data_test/streetview").iterdir()}
    sat = {p.name[:-len("_satView_polish.jpg")] for p in (tmp_path / "ANU_data_test/satview_polish").iterdir()}
    assert sorted(grd & sat) == sorted(r["id"] for r in s["test"])
    e, n = mat["utm"].T
    assert 680_000 < e.min() and e.max() < 720_000 and 6_080_000 < n.min() and n.max() < 6_100_000


def _metres(lat, lon, lat0):
    return np.radians(lat) * EARTH_R, np.radians(lon) * EARTH_R * math.cos(math.radians(lat0))


@pytest.mark.parametrize("vigor_layout", ["original", "reference"])
def test_vigor_dense_tiles_and_true_semi_positives(tmp_path, vigor_layout):
    m = write_layout("vigor", tmp_path, locations=24, seed=1, vigor_layout=vigor_layout, workers=1)
    shared = 0
    for city in ("Chicago", "NewYork", "SanFrancisco", "Seattle"):
        sat = f"{city}/satellite" if vigor_layout == "original" else f"satellite/{city}"
        pan = f"{city}/panorama" if vigor_layout == "original" else f"ground/{city}"
        tiles = (tmp_path / f"splits/{city}/satellite_list.txt").read_text().split()
        assert all((tmp_path / sat / t).is_file() for t in tiles)
        tlat = {t: tuple(map(float, t[len("satellite_"):-4].split("_"))) for t in tiles}
        lines = (tmp_path / f"splits/{city}/pano_label_balanced.txt").read_text().splitlines()
        train = (tmp_path / f"splits/{city}/same_area_balanced_train.txt").read_text().splitlines()
        test = (tmp_path / f"splits/{city}/same_area_balanced_test.txt").read_text().splitlines()
        assert sorted(train + test) == sorted(lines) and len(lines) == 6 and not set(train) & set(test)
        positives = []
        for line in lines:
            cols = line.split()
            assert len(cols) == 13 and (tmp_path / pan / cols[0]).is_file()
            pid, la, lo, tail = cols[0].split(",")
            assert len(pid) == 22 and tail == ".jpg"
            py, px = _metres(float(la), float(lo), float(la))
            dist = []
            for name, dy, dx in zip(cols[1::3], cols[2::3], cols[3::3]):
                ty, tx = _metres(*tlat[name], float(la))
                assert abs(py - ty) < 48 and abs(px - tx) < 48  # the tile truly contains the panorama
                assert abs(float(dy)) < 64 and abs(float(dx)) < 64
                # as the release: the panorama is at row S/2 + dy, column S/2 - dx of the tile
                assert float(dy) == pytest.approx(-(py - ty) * 128 / 96, abs=0.2)
                assert float(dx) == pytest.approx(-(px - tx) * 128 / 96, abs=0.2)
                dist.append(math.hypot(py - ty, px - tx))
            assert dist[0] == min(dist) and len(set(cols[1::3])) == 4
            positives.append(cols[1])
        shared += len(positives) - len(set(positives))
        assert max(positives.count(p) for p in positives) <= 2
        north = sorted({round(_metres(*tlat[t], 40)[0]) for t in tiles})
        assert set(np.diff(north)) == {48}  # tiles half a tile width apart
    assert shared >= 1 and len(m["splits"]["cities"]) == 4


def test_university_layout_and_distractors(tmp_path):
    m = write_layout("university", tmp_path, locations=4, seed=0, drone_views=3, distractors=2, workers=1)
    s = m["splits"]
    train, test, dis = ([r["id"] for r in s[k]] for k in ("train", "test", "distractors"))
    assert len(train) == 2 and len(test) == 2 and len(dis) == 2 and all(len(b) == 4 for b in train + test + dis)
    t = tmp_path
    for b in train:
        assert (t / f"train/satellite/{b}/{b}.jpg").is_file()
        views = sorted(p.name for p in (t / f"train/drone/{b}").iterdir())
        assert views == ["image-01.jpeg", "image-02.jpeg", "image-03.jpeg"]
    assert sorted(p.name for p in (t / "test/query_drone").iterdir()) == sorted(test)
    assert sorted(p.name for p in (t / "test/query_satellite").iterdir()) == sorted(test)
    assert sorted(p.name for p in (t / "test/gallery_satellite").iterdir()) == sorted(test + dis)
    assert sorted(p.name for p in (t / "test/gallery_drone").iterdir()) == sorted(test + dis)
    assert (t / f"test/gallery_satellite/{dis[0]}/{dis[0]}.jpg").is_file()


def test_colour_baseline(tmp_path):
    write_layout("cvusa", tmp_path, locations=6, seed=2, workers=1, jitter=0.0)
    refs = sorted(str(p) for p in (tmp_path / "bingmap/19").iterdir())
    assert colour_histogram_recall(refs, refs)["R@1"] == 100.0
    r = colour_histogram_recall(refs, refs[::-1], np.arange(6), np.arange(6)[::-1])
    assert r["R@1"] == 100.0 and set(r) == {"R@1", "R@5", "R@10", "R@1%"}
    with pytest.raises(UserInputError):
        colour_histogram_recall(refs, refs, np.arange(6), np.arange(6) + 10)


def test_cli_synth_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d"
    res = runner.invoke(app, ["synth", "--layout", "cvusa", "--out", str(out), "--locations", "4", "--workers", "1"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "s4g_synth_manifest.json").read_text())
    assert all((out / f).is_file() for f in manifest["files"])
    again = ["synth", "--layout", "cvusa", "--out", str(out), "--locations", "2", "--workers", "1"]
    res = runner.invoke(app, again)
    assert res.exit_code == 2 and "--overwrite" in res.output  # never replaced without being asked
    assert len(list((out / "bingmap/19").iterdir())) == 4
    res = runner.invoke(app, [*again, "--overwrite"])
    assert res.exit_code == 0, res.output  # the old files are moved beside it, so no stale image stays
    assert len(list((out / "bingmap/19").iterdir())) == 2
    (moved,) = tmp_path.glob("d.replaced-*")
    assert len(list((moved / "bingmap/19").iterdir())) == 4
    res = runner.invoke(app, ["synth", "--layout", "university", "--out", str(tmp_path / "u"), "--locations", "2",
                              "--drone-views", "1", "--workers", "1", "--preview", str(tmp_path / "pair.png")])
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(tmp_path / "pair.png").size[0] > 2 * Image.open(tmp_path / "pair.png").size[1]
    res = runner.invoke(app, ["synth", "--layout", "kitti", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "cvusa, cvact, vigor, university" in res.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("x")
    res = runner.invoke(app, ["synth", "--layout", "cvusa", "--out", str(busy), "--locations", "2"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, ["synth", "--layout", "vigor", "--out", str(tmp_path / "f"), "--locations", "3"])
    assert res.exit_code == 2 and "at least 8" in res.output
