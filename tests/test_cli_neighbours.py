"""`s4g neighbours`: CSV round trip and the errors a user can cause (exit 2, named file/option)."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.sampling import gps_neighbours

runner = CliRunner()


def write_csv(path, rows, header="name,lat,lon"):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 40), rng.uniform(-180, 180, 40)
    csv = write_csv(tmp_path / "pts.csv", [(f"p{i}", a, b) for i, (a, b) in enumerate(zip(lat, lon))])
    out = tmp_path / "sub" / "nb.npz"
    result = runner.invoke(app, ["neighbours", "--coords", str(csv), "--k", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "40 points" in result.output
    with np.load(out) as f:
        want_idx, want_dist = gps_neighbours(lat, lon, 5)
        np.testing.assert_array_equal(f["idx"], want_idx)
        np.testing.assert_array_equal(f["dist_m"], want_dist)
    assert [p.name for p in out.parent.iterdir()] == ["nb.npz"]  # no temporary left behind


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    result = runner.invoke(app, ["neighbours", "--coords", str(missing), "--out", str(tmp_path / "o.npz")])
    assert result.exit_code == 2
    assert "nope.csv" in result.output


def test_missing_lat_column(tmp_path):
    csv = write_csv(tmp_path / "bad.csv", [(1, 2), (3, 4)], header="y,lon")
    result = runner.invoke(app, ["neighbours", "--coords", str(csv), "--k", "1", "--out", f"{tmp_path}/o"])
    assert result.exit_code == 2
    assert "bad.csv" in result.output and "lat" in result.output
    # the names every s4g table accepts: latitude / longitude too, in any case
    csv = write_csv(tmp_path / "long.csv", [(1, 2), (3, 4)], header="Latitude,LONGITUDE")
    result = runner.invoke(app, ["neighbours", "--coords", str(csv), "--k", "1", "--out", f"{tmp_path}/o"])
    assert result.exit_code == 0, result.output


def test_binary_file_names_the_file(tmp_path):
    blob = tmp_path / "blob.csv"
    blob.write_bytes(b"lat,lon\n\xff\xfe\x00\x01\n")
    result = runner.invoke(app, ["neighbours", "--coords", str(blob), "--out", f"{tmp_path}/o"])
    assert result.exit_code == 2
    assert "blob.csv" in result.output and "UTF-8" in result.output


def test_bad_value_names_line(tmp_path):
    csv = write_csv(tmp_path / "v.csv", [("a", 1, 2), ("b", "x", 3), ("c", 0, 0)])
    result = runner.invoke(app, ["neighbours", "--coords", str(csv), "--k", "1", "--out", f"{tmp_path}/o"])
    assert result.exit_code == 2
    assert "v.csv, line 3" in " ".join(result.output.split())


def test_k_too_large_and_source_required(tmp_path):
    csv = write_csv(tmp_path / "three.csv", [("a", 1, 2), ("b", 2, 3), ("c", 0, 0)])
    out = tmp_path / "o.npz"
    result = runner.invoke(app, ["neighbours", "--coords", str(csv), "--out", str(out)])  # default k=128
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--k 128" in text and "(3)" in text and "three.csv" in text
    assert not out.exists()
    result = runner.invoke(app, ["neighbours", "--out", str(out)])
    assert result.exit_code == 2 and "--coords" in result.output
    result = runner.invoke(app, ["neighbours", "--dataset", "cvusa", "--out", str(out)])
    assert result.exit_code == 2 and "--data-root" in result.output


def test_dataset_classes(tmp_path, monkeypatch):
    import dataclasses

    from s4g.data import registry as datasets
    from s4g.data.records import TrainSet

    def fake_load(root, *, split_dir="splits"):
        return TrainSet("fake", ["q"] * 3, ["r"] * 3, np.arange(3), np.array([0.0, 0.0, 1.0]),
                        np.array([0.0, 1.0, 0.0]))

    spec = dataclasses.replace(datasets.get("vigor-same"), load_train=fake_load)
    monkeypatch.setitem(datasets.DATASETS, "vigor-same", spec)
    out = tmp_path / "o.npz"
    (tmp_path / "data").mkdir()  # an output is never written inside the data root
    args = ["neighbours", "--data-root", str(tmp_path / "data"), "--k", "2", "--out", str(out)]
    result = runner.invoke(app, [*args, "--dataset", "vigor-same"])
    assert result.exit_code == 0, result.output
    with np.load(out) as f:
        np.testing.assert_array_equal(f["idx"], [[1, 2], [0, 2], [0, 1]])
    result = runner.invoke(app, [*args, "--dataset", "university-d2s"])
    assert result.exit_code == 2 and "no GPS" in result.output
