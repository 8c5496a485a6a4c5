"""`--lists released`: the released code's neighbour lists, each against the independent
re-implementation in tests/reference.py, on CVUSA-, VIGOR- and University-style synthetic
worlds; `--lists s4g` (the default) is what the other tests check."""

from __future__ import annotations

import numpy as np
import pytest
from reference import pack_reference, released_gps_lists, released_tile_queries
from typer.testing import CliRunner

from s4g.app.cli import app
from s4g.app.synth.writer import write_layout
from s4g.data import registry as datasets
from s4g.errors import UserInputError
from s4g.retrieval import released
from s4g.retrieval.mining import similar_references
from s4g.retrieval.released import check_lists, last_query_embeddings, released_gps_neighbours
from s4g.sampling import pack_batches

pytest.importorskip("sklearn")
WORLDS = {"cvusa": "cvusa", "vigor": "vigor-same", "university": "university-d2s"}


@pytest.fixture(scope="module", params=sorted(WORLDS))
def world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    write_layout(request.param, root, locations=60, seed=2, workers=1)
    return request.param, datasets.load_train(WORLDS[request.param], root)


@pytest.mark.parametrize("rows", [None, 7])
def test_gps_lists_equal_the_released_scripts(world, rows, monkeypatch):
    name, train = world
    if train.class_lat is None:
        pytest.skip("University-1652 has no GPS")
    if rows is not None:  # several row blocks: the same values and order as the whole matrix
        monkeypatch.setattr(released, "_ROWS", rows)
    k = min(16, train.num_classes - 1)
    want = released_gps_lists(train.class_lat, train.class_lon, k)
    np.testing.assert_array_equal(released_gps_neighbours(train.class_lat, train.class_lon, k), want)


def test_gps_lists_with_exact_ties_and_far_points():
    # a grid: many equal distances (torch.topk's tie order), and k reaching the farthest
    # points, which tie with the diagonal's fill value
    lat, lon = np.meshgrid(np.arange(4) * 0.001 + 40.0, np.arange(5) * 0.001 - 75.0)
    lat, lon = lat.ravel(), lon.ravel()
    for k in (1, 4, 12, lat.size - 1):
        np.testing.assert_array_equal(released_gps_neighbours(lat, lon, k), released_gps_lists(lat, lon, k))


def test_mined_lists_keep_a_tiles_last_query(world):
    _, train = world
    rng = np.random.default_rng(0)
    pair_class = np.asarray(train.pair_class, dtype=np.int64)
    q = rng.normal(size=(pair_class.size, 8)).astype(np.float32)
    r = rng.normal(size=(train.num_classes, 8)).astype(np.float32)
    chosen = last_query_embeddings(q, pair_class, r)
    np.testing.assert_array_equal(chosen, released_tile_queries(q, pair_class, r))
    k = min(10, train.num_classes - 1)
    exclude = np.arange(train.num_classes)
    got = similar_references(chosen, r, k, exclude, device="cpu")
    scores = released_tile_queries(q, pair_class, r).astype(np.float64) @ r.astype(np.float64).T
    scores[exclude, exclude] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-scores, axis=1, kind="stable")[:, :k])


@pytest.mark.parametrize("select, in_range", [(4, 3), (8, 6), (6, 20)])
@pytest.mark.parametrize("seed", [0, 1])
def test_packing_cuts_the_list_after_removals(world, select, in_range, seed):
    _, train = world
    rng = np.random.default_rng(seed)
    n = train.num_classes
    nb = np.stack([rng.permutation(np.delete(np.arange(n), c))[: min(24, n - 1)] for c in range(n)])
    batch = min(8, n)
    got, stats = pack_batches(train.pair_class, nb, batch, select, seed, return_stats=True,
                              neighbour_range=in_range)
    want, dropped, via = pack_reference(train.pair_class, nb, batch, select, seed, neighbour_range=in_range)
    np.testing.assert_array_equal(got, want)
    assert (stats["dropped"], stats["via_neighbour"]) == (dropped, via)
    # s4g's order (cut first) is another packing whenever a list outgrows its range
    s4g_way, _, _ = pack_reference(train.pair_class, nb[:, :in_range], batch, select, seed)
    np.testing.assert_array_equal(pack_batches(train.pair_class, nb[:, :in_range], batch, select, seed), s4g_way)


def test_unknown_lists_value_is_refused():
    with pytest.raises(UserInputError, match="--lists"):
        check_lists("paper")
    with pytest.raises(UserInputError, match="neighbour_range"):
        pack_batches(np.arange(4), np.zeros((4, 2), dtype=np.int64), 2, 2, 0, neighbour_range=0)


def test_neighbours_command_writes_the_released_lists(tmp_path):
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(40, 41, 30), rng.uniform(-75, -74, 30)
    csv = tmp_path / "points.csv"
    csv.write_text("lat,lon\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(lat, lon)))
    out = tmp_path / "nn.npz"
    result = CliRunner().invoke(app, ["neighbours", "--coords", str(csv), "--k", "5", "--lists", "released",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as got:
        np.testing.assert_array_equal(got["idx"], released_gps_lists(lat, lon, 5))
    result = CliRunner().invoke(app, ["neighbours", "--coords", str(csv), "--lists", "paper", "--out", str(out),
                                      "--overwrite"])
    assert result.exit_code == 2 and "--lists" in result.output
