"""Dataset loaders on tiny hand-written trees: layouts, labels, GPS and every bad input.

Loaders never open images, so the image files here are empty; the synthetic generator's
real trees are checked against its manifests in test_loaders_synth.py.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from s4g.data.cvact import MissingPairsWarning, scan_split
from s4g.data.registry import NAMES, load_eval, load_train
from s4g.data.utm import utm_to_latlon
from s4g.errors import UserInputError


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


# ---- CVUSA ---------------------------------------------------------------------------------

def make_cvusa(root: Path, train_ids=(1, 2, 3, 5), test_ids=(4, 6)) -> None:
    (root / "splits").mkdir(parents=True)
    for name, ids in (("train-19zl.csv", train_ids), ("val-19zl.csv", test_ids)):
        lines = [f"bingmap/19/{i:07d}.jpg,streetview/panos/{i:07d}.jpg,annotations/{i:07d}.png" for i in ids]
        (root / "splits" / name).write_text("\n".join(lines) + "\n")
        for i in ids:
            touch(root / "bingmap" / "19" / f"{i:07d}.jpg")
            touch(root / "streetview" / "panos" / f"{i:07d}.jpg")
    (root / "split_locations").mkdir()
    # ground positions a little off the tile centres, as in the release (median 8.6 m)
    rows = [f"{10 + i}.5,{-70 - i}.25,{10 + i}.5001,{-70 - i}.2501,x" for i in range(1, 8)]
    (root / "split_locations" / "all.csv").write_text("\n".join(rows) + "\n")


def test_cvusa_train_and_test(tmp_path):
    make_cvusa(tmp_path)
    ts = load_train("cvusa", tmp_path)
    assert ts.num_pairs == ts.num_classes == 4
    assert ts.pair_class.tolist() == [0, 1, 2, 3]
    assert ts.query_files[3] == str(tmp_path / "streetview/panos/0000005.jpg")
    assert ts.reference_files[3] == str(tmp_path / "bingmap/19/0000005.jpg")
    # GPS neighbour lists use the ground positions (columns 3-4), as the reference does
    np.testing.assert_allclose(ts.class_lat, [11.5001, 12.5001, 13.5001, 15.5001])
    np.testing.assert_allclose(ts.class_lon, [-71.2501, -72.2501, -73.2501, -75.2501])
    ev = load_eval("cvusa", tmp_path)  # preset split "test" = val-19zl.csv
    assert [Path(f).name for f in ev.query_files] == ["0000004.jpg", "0000006.jpg"]
    assert ev.query_labels.tolist() == ev.reference_labels.tolist() == [0, 1]
    np.testing.assert_allclose(ev.reference_lat, [14.5, 16.5])  # tile centres
    np.testing.assert_allclose(ev.query_lat, [14.5001, 16.5001])  # where the panoramas were taken


def test_cvusa_location_table_at_either_place(tmp_path):
    make_cvusa(tmp_path)
    (tmp_path / "split_locations" / "all.csv").rename(tmp_path / "all.csv")
    np.testing.assert_allclose(load_train("cvusa", tmp_path).class_lat, [11.5001, 12.5001, 13.5001, 15.5001])
    (tmp_path / "all.csv").unlink()
    with pytest.raises(UserInputError, match="split_locations/all.csv.*or.*all.csv"):
        load_train("cvusa", tmp_path)
    assert load_eval("cvusa", tmp_path).reference_lat is None  # evaluation needs no GPS


def test_cvusa_bad_inputs(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_train("cvusa", tmp_path / "nope")
    make_cvusa(tmp_path)
    with pytest.raises(UserInputError, match="valid: test"):
        load_eval("cvusa", tmp_path, "val")
    (tmp_path / "streetview/panos/0000002.jpg").unlink()
    with pytest.raises(UserInputError, match="0000002.jpg"):
        load_train("cvusa", tmp_path)
    (tmp_path / "splits/val-19zl.csv").unlink()
    with pytest.raises(UserInputError, match="val-19zl.csv"):
        load_eval("cvusa", tmp_path)


def test_unknown_dataset_lists_names(tmp_path):
    with pytest.raises(UserInputError, match="vigor-cross"):
        load_train("kitti", tmp_path)


# ---- CVACT ---------------------------------------------------------------------------------

def make_cvact(root: Path, n=6, train=(1, 2, 3, 4), val=(5, 6), char_ids=True, missing=()) -> list[str]:
    from scipy.io import savemat

    ids = [f"pano{i:04d}xyz" for i in range(n)]
    utm = np.column_stack([690000.0 + 100 * np.arange(n), 6090000.0 + 50 * np.arange(n)])
    pano_ids = np.array(ids) if char_ids else np.array(ids, dtype=object).reshape(-1, 1)
    savemat(root / "ACT_data.mat", {
        "panoIds": pano_ids,
        "utm": utm,
        "trainSet": {"trainInd": np.array(train, dtype=np.float64).reshape(-1, 1)},
        "valSet": {"valInd": np.array(val, dtype=np.float64).reshape(-1, 1)},
    })
    for k, i in enumerate(ids):
        if k not in missing:
            touch(root / "ANU_data_small/streetview" / f"{i}_grdView.jpg")
        touch(root / "ANU_data_small/satview_polish" / f"{i}_satView_polish.jpg")
    return ids


@pytest.mark.parametrize("char_ids", [True, False])
def test_cvact_train_val_gps(tmp_path, char_ids):
    ids = make_cvact(tmp_path, char_ids=char_ids)
    ts = load_train("cvact", tmp_path)
    assert [Path(f).name for f in ts.query_files] == [f"{i}_grdView.jpg" for i in ids[0:4]]
    assert [Path(f).name for f in ts.reference_files] == [f"{i}_satView_polish.jpg" for i in ids[0:4]]
    assert ts.pair_class.tolist() == [0, 1, 2, 3]
    lat, lon = utm_to_latlon(690000.0 + 100 * np.arange(4), 6090000.0 + 50 * np.arange(4), 55, True)
    np.testing.assert_allclose(ts.class_lat, lat)
    np.testing.assert_allclose(ts.class_lon, lon)
    assert -36 < ts.class_lat.min() and ts.class_lon.max() < 150  # Canberra
    ev = load_eval("cvact", tmp_path)  # preset split "val"
    assert [Path(f).name for f in ev.query_files] == [f"{i}_grdView.jpg" for i in ids[4:6]]
    assert ev.query_labels.tolist() == [0, 1]


def test_cvact_counts_missing_files(tmp_path):
    make_cvact(tmp_path, missing=(1, 3))
    with pytest.warns(MissingPairsWarning, match="skipped 2 of 4") as rec:
        ts = load_train("cvact", tmp_path)
    assert rec[0].message.count == 2
    assert ts.num_pairs == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = scan_split(tmp_path, "train")
    assert split.skipped_ids == ["pano0001xyz", "pano0003xyz"] and len(split.ids) == 2


def test_cvact_test_split_is_sorted_intersection(tmp_path):
    for i in ("b", "a", "c"):
        touch(tmp_path / "ANU_data_test/streetview" / f"{i}_grdView.jpg")
    for i in ("c", "a", "d"):
        touch(tmp_path / "ANU_data_test/satview_polish" / f"{i}_satView_polish.jpg")
    ev = load_eval("cvact", tmp_path, "test")
    assert [Path(f).name for f in ev.query_files] == ["a_grdView.jpg", "c_grdView.jpg"]
    assert [Path(f).name for f in ev.reference_files] == ["a_satView_polish.jpg", "c_satView_polish.jpg"]
    assert ev.reference_lat is None


def test_cvact_bad_mat_and_split(tmp_path):
    from scipy.io import savemat

    make_cvact(tmp_path)
    with pytest.raises(UserInputError, match="valid: val, test"):
        load_eval("cvact", tmp_path, "train")
    savemat(tmp_path / "ACT_data.mat", {"panoIds": np.array(["a"]), "utm": np.zeros((1, 2)),
                                        "trainSet": {"wrongName": np.array([[1]])}})
    with pytest.raises(UserInputError, match="trainSet.trainInd"):
        load_train("cvact", tmp_path)
    (tmp_path / "ACT_data.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(UserInputError, match="ACT_data.mat"):
        load_train("cvact", tmp_path)
    (tmp_path / "ACT_data.mat").unlink()
    with pytest.raises(UserInputError, match="ACT_data.mat"):
        load_train("cvact", tmp_path)


def test_cvact_without_scipy_says_how_to_install(tmp_path, monkeypatch):
    make_cvact(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)
    with pytest.raises(UserInputError, match=r's4g\[cvact\]'):
        load_train("cvact", tmp_path)


def test_utm_inverse_matches_proj():
    # Reference values from PROJ (pyproj 3.7, EPSG:32755 -> EPSG:4326).
    e = np.array([692000.0, 500000.0, 166021.44, 700123.4])
    n = np.array([6091000.0, 6000000.0, 5000000.0, 6094567.8])
    lat, lon = utm_to_latlon(e, n, 55, True)
    np.testing.assert_allclose(lat, [-35.3057866627, -36.1447180988, -45.0745885722, -35.2720466683], atol=1e-9)
    np.testing.assert_allclose(lon, [149.1117982924, 147.0, 142.7570004653, 149.2002192074], atol=1e-9)


# ---- VIGOR ---------------------------------------------------------------------------------

CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")


def tile(city_k: int, j: int) -> str:
    return f"satellite_{40 + city_k}.{j:04d}_-{80 + city_k}.{j:04d}.png"


def make_vigor(root: Path, layout: str = "original", split_dir: str = "splits", shift: int = 0,
               corrected_names: bool = False) -> None:
    """Per city 6 tiles; 3 train panos (tiles 0, 0, 2 positive) and 2 test panos.

    corrected_names: name the panorama lists as the corrected-label release does
    (`*__corrected.txt`, CRLF line ends)."""
    for k, city in enumerate(CITIES):
        sat = root / city / "satellite" if layout == "original" else root / "satellite" / city
        pano = root / city / "panorama" if layout == "original" else root / "ground" / city
        tiles = [tile(k, j) for j in range(6)]
        for t in tiles:
            touch(sat / t)
        d = root / split_dir / city
        d.mkdir(parents=True)
        (d / "satellite_list.txt").write_text("\n".join(tiles) + "\n")

        def rows(names, positives, pano=pano, tiles=tiles):
            out = []
            for name, p in zip(names, positives):
                touch(pano / name)
                semi = [tiles[(p + s + shift) % 6] for s in (1, 2, 3)]
                out.append(f"{name} {tiles[p]} 1.0 2.0 " + " ".join(f"{s} 3.0 4.0" for s in semi))
            return "\n".join(out) + "\n"

        train = [f"tr{k}{i},{40 + k}.1,-{80 + k}.1,.jpg" for i in range(3)]
        test = [f"te{k}{i},{40 + k}.2,-{80 + k}.2,.jpg" for i in range(2)]
        lists = {"same_area_balanced_train": rows(train, [0, 0, 2]), "same_area_balanced_test": rows(test, [1, 5]),
                 "pano_label_balanced": rows(train + test, [0, 0, 2, 1, 5])}
        for stem, text in lists.items():
            if corrected_names:
                (d / f"{stem}__corrected.txt").write_bytes(text.replace("\n", "\r\n").encode())
            else:
                (d / f"{stem}.txt").write_text(text)


@pytest.mark.parametrize("layout", ["original", "reference"])
def test_vigor_same_area(tmp_path, layout):
    make_vigor(tmp_path, layout)
    ts = load_train("vigor-same", tmp_path)
    assert ts.num_pairs == 12 and ts.num_classes == 8  # tiles 0 and 2 of each city
    assert ts.pair_class.tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]
    assert Path(ts.reference_files[3]).name == tile(1, 2)
    sat_dir = "NewYork/satellite" if layout == "original" else "satellite/NewYork"
    assert ts.reference_files[3] == str(tmp_path / sat_dir / tile(1, 2))
    np.testing.assert_allclose([ts.class_lat[3], ts.class_lon[3]], [41.0002, -81.0002])
    ev = load_eval("vigor-same", tmp_path)
    assert len(ev.reference_files) == 24 and len(ev.query_files) == 8
    assert ev.reference_labels.tolist() == list(range(24))
    assert ev.query_labels.tolist() == [1, 5, 7, 11, 13, 17, 19, 23]
    assert ev.semi_positives[0].tolist() == [2, 3, 4]
    assert ev.semi_positives[1].tolist() == [0, 1, 2]  # (5+1..3) % 6 within Chicago
    assert ev.semi_positives[2].tolist() == [8, 9, 10]
    np.testing.assert_allclose(ev.reference_lat[7], 41.0001)
    # where each panorama was taken, from its file name {panoid},{lat},{lon},.jpg
    np.testing.assert_allclose([ev.query_lat[2], ev.query_lon[2]], [41.2, -81.2])


@pytest.mark.parametrize("mode", ["same", "cross"])
def test_vigor_corrected_release_naming(tmp_path, mode):
    # the corrected-label release: splits__corrected/{City}/*__corrected.txt with CRLF line ends
    make_vigor(tmp_path / "plain", split_dir="splits__corrected")
    make_vigor(tmp_path / "release", split_dir="splits__corrected", corrected_names=True)
    name = f"vigor-{mode}"
    for load in (load_train, load_eval):
        plain = load(name, tmp_path / "plain", split_dir="splits__corrected")
        release = load(name, tmp_path / "release", split_dir="splits__corrected")
        for field in ("query_labels", "semi_positives", "pair_class", "class_lat"):
            if hasattr(plain, field):
                np.testing.assert_array_equal(getattr(plain, field), getattr(release, field))
        strip = [str(Path(f).relative_to(tmp_path / "plain")) for f in plain.query_files]
        assert strip == [str(Path(f).relative_to(tmp_path / "release")) for f in release.query_files]
    # either naming in any folder; both at once is ambiguous
    folder = tmp_path / "release" / "splits__corrected" / "NewYork"  # a training city of both modes
    (folder / "same_area_balanced_train.txt").write_text("x")
    (folder / "pano_label_balanced.txt").write_text("x")
    with pytest.raises(UserInputError, match="holds both"):
        load_train(name, tmp_path / "release", split_dir="splits__corrected")


def test_vigor_cross_area_and_corrected_splits(tmp_path):
    make_vigor(tmp_path)
    make_vigor(tmp_path, split_dir="splits__corrected", shift=1)
    ts = load_train("vigor-cross", tmp_path)
    assert ts.num_pairs == 10 and ts.num_classes == 8  # NewYork + Seattle: tiles 0, 1, 2, 5
    assert all(("NewYork" in f) or ("Seattle" in f) for f in ts.query_files)
    ev = load_eval("vigor-cross", tmp_path)
    assert len(ev.reference_files) == 12 and all(("Chicago" in f) or ("SanFrancisco" in f) for f in ev.reference_files)
    assert ev.query_labels.tolist() == [0, 0, 2, 1, 5, 6, 6, 8, 7, 11]
    corrected = load_eval("vigor-cross", tmp_path, split_dir="splits__corrected")
    assert corrected.semi_positives[0].tolist() == [2, 3, 4]
    assert ev.semi_positives[0].tolist() == [1, 2, 3]


def test_vigor_bad_inputs(tmp_path):
    touch(tmp_path / "Chicago" / "somefile")
    with pytest.raises(UserInputError, match=r"\{City\}/satellite/.*ground/\{City\}/"):
        load_train("vigor-same", tmp_path)
    root = tmp_path / "v"
    make_vigor(root)
    with pytest.raises(UserInputError, match="splits__corrected"):
        load_train("vigor-same", root, split_dir="splits__corrected")
    (root / "Seattle/panorama" / "tr30,43.1,-83.1,.jpg").unlink()
    with pytest.raises(UserInputError, match="tr30"):
        load_train("vigor-same", root)
    (root / "splits/Chicago/satellite_list.txt").write_text(tile(0, 0) + "\n")
    with pytest.raises(UserInputError, match="not in splits/Chicago/satellite_list.txt"):
        load_eval("vigor-same", root)


# ---- University-1652 -----------------------------------------------------------------------

def make_university(root: Path) -> None:
    for b in ("0001", "0002", "0010"):
        touch(root / "train/satellite" / b / f"{b}.jpg")
        for j in range(3):
            touch(root / "train/drone" / b / f"image-{j:02d}.jpeg")
    for b in ("0003", "0004"):
        for j in range(2):
            touch(root / "test/query_drone" / b / f"image-{j:02d}.jpeg")
            touch(root / "test/gallery_drone" / b / f"image-{j:02d}.jpeg")
        touch(root / "test/query_satellite" / b / f"{b}.jpg")
    for b in ("0003", "0004", "0099"):
        touch(root / "test/gallery_satellite" / b / f"{b}.jpg")


def test_university_train_and_both_directions(tmp_path):
    make_university(tmp_path)
    ts = load_train("university-d2s", tmp_path)
    assert ts.query_kind == "drone" and ts.class_lat is None
    assert ts.num_pairs == 9 and ts.num_classes == 3
    assert ts.pair_class.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert Path(ts.reference_files[2]).name == "0010.jpg"
    d2s = load_eval("university-d2s", tmp_path)
    assert d2s.query_labels.tolist() == [3, 3, 4, 4]
    assert d2s.reference_labels.tolist() == [3, 4, 99]  # 99 is a distractor
    assert (d2s.query_kind, d2s.reference_kind) == ("drone", "aerial")
    s2d = load_eval("university-s2d", tmp_path)
    assert s2d.query_labels.tolist() == [3, 4]
    assert s2d.reference_labels.tolist() == [3, 3, 4, 4]
    assert (s2d.query_kind, s2d.reference_kind) == ("aerial", "drone")


def test_university_bad_inputs(tmp_path):
    make_university(tmp_path)
    (tmp_path / "test/gallery_satellite/0005").mkdir()
    with pytest.raises(UserInputError, match="0005.*holds no image"):
        load_eval("university-d2s", tmp_path)
    (tmp_path / "train/drone/0042").mkdir()
    touch(tmp_path / "train/drone/0042/x.jpeg")
    with pytest.raises(UserInputError, match="building 0042"):
        load_train("university-s2d", tmp_path)
    (tmp_path / "train/drone/abc").mkdir()
    with pytest.raises(UserInputError, match="integer building id"):
        load_train("university-s2d", tmp_path)


# ---- csv -----------------------------------------------------------------------------------

def make_csv(root: Path, header="query,reference,lat,lon,split") -> None:
    rows = [header,
            "g/a.jpg,s/1.png,10.0,20.0,train",
            "g/b.jpg,s/2.png,11.0,21.0,train",
            "g/c.jpg,s/1.png,10.5,20.5,train",
            "g/d.jpg,s/3.png,12.0,22.0,test"]
    for r in rows[1:]:
        q, s = r.split(",")[:2]
        touch(root / q)
        touch(root / s)
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")


def test_csv_dataset(tmp_path):
    make_csv(tmp_path)
    ts = load_train("csv", tmp_path)
    assert ts.pair_class.tolist() == [0, 1, 0]
    assert ts.reference_files == [str(tmp_path / "s/1.png"), str(tmp_path / "s/2.png")]
    np.testing.assert_allclose(ts.class_lat, [10.0, 11.0])
    np.testing.assert_allclose(ts.class_lon, [20.0, 21.0])
    ev = load_eval("csv", tmp_path / "pairs.csv")
    assert ev.query_files == [str(tmp_path / "g/d.jpg")] and ev.query_labels.tolist() == [0]


def test_csv_bad_inputs(tmp_path):
    make_csv(tmp_path, header="query,ref,lat,lon,split")
    with pytest.raises(UserInputError, match="reference"):
        load_train("csv", tmp_path)
    make_csv(tmp_path)
    (tmp_path / "s/2.png").unlink()
    with pytest.raises(UserInputError, match="2.png"):
        load_train("csv", tmp_path)
    with pytest.raises(UserInputError, match="pairs.csv"):
        load_train("csv", tmp_path / "g")


def test_lists_written_on_windows_read_the_same(tmp_path):
    """Backslashes separate folders in split files and tables, as slashes do."""
    make_cvusa(tmp_path / "slash")
    make_cvusa(tmp_path / "back")
    for name in ("train-19zl.csv", "val-19zl.csv"):
        split = tmp_path / "back" / "splits" / name
        split.write_text(split.read_text().replace("/", "\\"))
    for load in (load_train, load_eval):
        want, got = load("cvusa", tmp_path / "slash"), load("cvusa", tmp_path / "back")
        assert [f.replace("slash", "back") for f in want.query_files] == got.query_files
        assert [f.replace("slash", "back") for f in want.reference_files] == got.reference_files
    make_csv(tmp_path / "csv")
    table = tmp_path / "csv" / "pairs.csv"
    table.write_text(table.read_text().replace("/", "\\"))
    ts = load_train("csv", tmp_path / "csv")
    assert ts.reference_files == [str(tmp_path / "csv" / "s" / "1.png"), str(tmp_path / "csv" / "s" / "2.png")]


@pytest.mark.skipif(os.name == "nt", reason="on Windows a drive letter makes an absolute path, kept as such")
def test_a_drive_letter_elsewhere_names_the_line(tmp_path):
    make_csv(tmp_path)
    table = tmp_path / "pairs.csv"
    table.write_text(table.read_text().replace("g/b.jpg", "C:\\data\\b.jpg"))
    with pytest.raises(UserInputError, match=r"pairs.csv' line 3: 'C:.*drive 'C:'"):
        load_train("csv", tmp_path)


# "synthetic" reads a CVUSA tree (its root is made by s4g.app.synth.cache, tested elsewhere)
READERS = [name for name in NAMES if name != "synthetic"]


@pytest.mark.parametrize("name", READERS)
def test_missing_root_names_the_path(tmp_path, name):
    with pytest.raises(UserInputError, match="no-such-root"):
        load_train(name, tmp_path / "no-such-root")
    with pytest.raises(UserInputError, match="no-such-root"):
        load_eval(name, tmp_path / "no-such-root")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_split_lists_valid_ones(tmp_path, name):
    with pytest.raises(UserInputError, match="valid: .*test"):
        load_eval(name, tmp_path, "bogus")
