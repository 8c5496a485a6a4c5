"""docs/speed.md's tables are those scripts/speed_tables.py generates from benches/results/*.json:
a figure edited by hand, or a bench rerun without regenerating the page, fails here."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "speed_tables.py"


@pytest.fixture(scope="module")
def speed():
    if not SCRIPT.exists():
        pytest.skip("needs the source checkout (scripts/, docs/, benches/results/)")
    spec = importlib.util.spec_from_file_location("speed_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_equals_the_tables_generated_from_the_json(speed):
    page = speed.PAGE.read_text()
    assert speed.render(page) == page, "docs/speed.md is stale: run python scripts/speed_tables.py"


def test_every_table_is_on_the_page_and_every_bench_has_one(speed):
    names = {m["name"] for m in speed.MARKER.finditer(speed.PAGE.read_text())}
    assert names == set(speed.TABLES)
    benches = {p.stem for p in (ROOT / "benches").glob("bench_*.py")}
    on_page = {bench for bench, _ in speed.TABLES.values()}
    # bench_train_step measures a GPU's training step: its JSON comes from benches/gpu_check.sh.
    assert benches - on_page == {"bench_train_step"}


def test_a_changed_figure_makes_the_page_stale(speed, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(speed.RESULTS, results)
    page = speed.PAGE.read_text()
    assert speed.render(page, results) == page
    gps = json.loads((results / "bench_gps.json").read_text())
    gps["seconds"]["s4g"] *= 2
    (results / "bench_gps.json").write_text(json.dumps(gps))
    assert speed.render(page, results) != page


def test_check_mode_exit_status(speed, tmp_path, monkeypatch):
    assert speed.main(["--check"]) == 0
    stale = tmp_path / "speed.md"
    stale.write_text(speed.PAGE.read_text().replace("| s4g `gps_neighbours`", "| s4g `gps_neighbours` (edited)"))
    monkeypatch.setattr(speed, "PAGE", stale)
    assert speed.main(["--check"]) == 1
