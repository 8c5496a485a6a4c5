"""Every loader on the synthetic generator's trees, checked against its manifest."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from s4g.app.synth.writer import write_layout
from s4g.data.cvact import MissingPairsWarning
from s4g.data.registry import load_eval, load_train
from s4g.errors import UserInputError


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Write each layout once per module (tiny: a few seconds in all)."""
    base = tmp_path_factory.mktemp("synth")
    made = {}

    def get(layout: str, **kw):
        key = (layout, tuple(sorted(kw.items())))
        if key not in made:
            root = base / f"{layout}-{len(made)}"
            n = kw.pop("locations", {"cvusa": 10, "cvact": 14, "vigor": 16, "university": 5}[layout])
            made[key] = (root, write_layout(layout, root, locations=n, seed=1, workers=1, **kw))
        return made[key]

    return get


def names(files):
    return [Path(f).name for f in files]


def test_cvusa_matches_manifest(trees):
    root, m = trees("cvusa")
    train, val = m["splits"]["train"], m["splits"]["val"]
    ts = load_train("cvusa", root)
    assert ts.query_files == [str(root / e["query"]) for e in train]
    assert ts.reference_files == [str(root / e["reference"]) for e in train]
    assert ts.pair_class.tolist() == list(range(len(train)))
    np.testing.assert_allclose(ts.class_lat, [e["lat"] for e in train], atol=1e-6)
    np.testing.assert_allclose(ts.class_lon, [e["lon"] for e in train], atol=1e-6)
    ev = load_eval("cvusa", root)
    assert ev.query_files == [str(root / e["query"]) for e in val]
    assert ev.reference_files == [str(root / e["reference"]) for e in val]
    assert (ev.query_labels == ev.reference_labels).all()


def _haversine_m(lat1, lon1, lat2, lon2):
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))


def test_cvact_matches_manifest(trees):
    root, m = trees("cvact")
    s = m["splits"]
    omitted_train = [e for e in s["omitted"] if e["split"] == "train"]
    with pytest.warns(MissingPairsWarning) as rec:
        ts = load_train("cvact", root)
    assert rec[0].message.count == len(omitted_train) > 0
    assert sorted(ts.query_files) == sorted(str(root / e["query"]) for e in s["train"])
    by_query = {str(root / e["query"]): e for e in s["train"]}
    assert all(str(root / by_query[q]["reference"]) == ts.reference_files[c]
               for q, c in zip(ts.query_files, ts.pair_class))
    # UTM -> lat/lon: distances on the sphere agree with grid distances (UTM scale
    # factor near Canberra is within 0.9996..1.0004; the sphere adds < 0.5 %).
    utm = np.array([by_query[q]["utm"] for q in ts.query_files])
    grid = np.hypot(*(utm[:, None, :] - utm[None, :, :]).transpose(2, 0, 1))
    sphere = _haversine_m(ts.class_lat[:, None], ts.class_lon[:, None], ts.class_lat[None], ts.class_lon[None])
    off = ~np.eye(len(utm), dtype=bool)
    np.testing.assert_allclose(sphere[off], grid[off], rtol=6e-3)
    assert ((-35.6 < ts.class_lat) & (ts.class_lat < -35.0) & (148.9 < ts.class_lon) & (ts.class_lon < 149.4)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPairsWarning)
        ev = load_eval("cvact", root)
    assert sorted(ev.query_files) == sorted(str(root / e["query"]) for e in s["val"])
    test = load_eval("cvact", root, "test")
    assert test.query_files == sorted(str(root / e["query"]) for e in s["test"])
    assert test.reference_files == [
        str(root / e["reference"]) for e in sorted(s["test"], key=lambda e: e["query"])]


def _vigor_expect(m, cities, which):
    """(pano names, positive names, semi names, tile names) of the manifest for a split."""
    panos, pos, semi, tiles = [], [], [], []
    for city in cities:
        c = m["splits"]["cities"][city]
        tiles += [t["name"] for t in c["tiles"]]
        for p in c["panoramas"]:
            if which is None or p["same_area"] == which:
                panos.append(p["name"])
                pos.append(p["positive"])
                semi.append(p["semi_positives"])
    return panos, pos, semi, tiles


@pytest.mark.parametrize("layout", ["original", "reference"])
def test_vigor_same_area_matches_manifest(trees, layout):
    root, m = trees("vigor", vigor_layout=layout)
    cities = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
    panos, pos, _, _ = _vigor_expect(m, cities, "train")
    ts = load_train("vigor-same", root)
    assert sorted(names(ts.query_files)) == sorted(panos)
    got_pos = dict(zip(names(ts.query_files), (names(ts.reference_files)[c] for c in ts.pair_class)))
    assert got_pos == dict(zip(panos, pos))
    assert ts.num_classes == len(set(pos))
    tile_gps = {t["name"]: (t["lat"], t["lon"]) for c in cities for t in m["splits"]["cities"][c]["tiles"]}
    want = np.array([tile_gps[n] for n in names(ts.reference_files)])
    np.testing.assert_allclose(np.column_stack([ts.class_lat, ts.class_lon]), want, atol=1e-7)

    panos, pos, semi, tiles = _vigor_expect(m, cities, "test")
    ev = load_eval("vigor-same", root)
    assert names(ev.reference_files) == tiles
    ref_names = np.array(names(ev.reference_files))
    rows = zip(names(ev.query_files), ev.query_labels, ev.semi_positives)
    got = {q: (ref_names[label], list(ref_names[semi])) for q, label, semi in rows}
    assert got == {q: (p, list(s)) for q, p, s in zip(panos, pos, semi)}


def test_vigor_cross_area_and_corrected_split_dir(trees, tmp_path):
    src, m = trees("vigor")
    root = tmp_path / "vigor"
    shutil.copytree(src, root)
    ts = load_train("vigor-cross", root)
    want_train, *_ = _vigor_expect(m, ("NewYork", "Seattle"), None)
    assert sorted(names(ts.query_files)) == sorted(want_train)
    panos, pos, semi, tiles = _vigor_expect(m, ("Chicago", "SanFrancisco"), None)
    ev = load_eval("vigor-cross", root)
    assert names(ev.reference_files) == tiles and sorted(names(ev.query_files)) == sorted(panos)
    # A corrected split folder: same names, semi-positives reversed in every line.
    shutil.copytree(root / "splits", root / "splits__corrected")
    for f in (root / "splits__corrected").glob("*/pano_label_balanced.txt"):
        rows = [line.split() for line in f.read_text().splitlines() if line.strip()]
        f.write_text("".join(" ".join(r[:4] + r[10:13] + r[7:10] + r[4:7]) + "\n" for r in rows))
    fixed = load_eval("vigor-cross", root, split_dir="splits__corrected")
    assert fixed.semi_positives.tolist() == ev.semi_positives[:, ::-1].tolist()
    assert fixed.query_labels.tolist() == ev.query_labels.tolist()
    with pytest.raises(UserInputError, match="splits__missing"):
        load_eval("vigor-cross", root, split_dir="splits__missing")


def test_university_matches_manifest(trees):
    root, m = trees("university", drone_views=3, distractors=2)
    s = m["splits"]
    ts = load_train("university-d2s", root)
    assert ts.query_kind == "drone" and ts.class_lat is None
    want = {str(root / v[0]): str(root / b["satellite"][0]) for b in s["train"] for v in b["drone"]}
    assert dict(zip(ts.query_files, (ts.reference_files[c] for c in ts.pair_class))) == want
    d2s = load_eval("university-d2s", root)
    assert len(d2s.query_files) == 3 * len(s["test"])
    assert sorted(d2s.reference_labels.tolist()) == sorted(int(b["id"]) for b in s["test"] + s["distractors"])
    assert set(d2s.query_labels.tolist()) == {int(b["id"]) for b in s["test"]}
    s2d = load_eval("university-s2d", root)
    assert s2d.query_labels.tolist() == sorted(int(b["id"]) for b in s["test"])
    assert len(s2d.reference_files) == 3 * (len(s["test"]) + len(s["distractors"]))
    assert np.bincount(s2d.reference_labels)[s2d.query_labels].tolist() == [3] * len(s["test"])
