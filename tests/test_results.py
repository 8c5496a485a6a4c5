"""Per-query results, the localisation error in metres, the per-query CSV and the retrieval
picture, on hand-made worlds whose answers are known."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from reference import haversine_np

from s4g.app.pictures import (
    CELL,
    COLOURS,
    FRAME,
    examples_picture,
    grid_boxes,
    query_width,
    save_png,
)
from s4g.data.records import EvalSet
from s4g.retrieval.results import (
    WITHIN_M,
    error_summary,
    per_query_header,
    pick_examples,
    split_results,
    top_references,
    within_key,
    write_per_query_csv,
)


def world(tmp_path, n_ref=12, n_q=10, seed=0, colours=True, semi=False):
    """References on a ~100 m grid near Zurich, queries a few metres to a few km off; query q's
    embedding is that of reference answer[q], so its top-1 is known. Each image is one colour."""
    rng = np.random.default_rng(seed)
    lat = 47.37 + 0.0009 * (np.arange(n_ref) // 4)
    lon = 8.54 + 0.0013 * (np.arange(n_ref) % 4)
    ref_labels = np.arange(n_ref) + 100
    truth = rng.permutation(n_ref)[:n_q]  # each query's true reference row
    answer = truth.copy()
    wrong = rng.permutation(n_q)[: n_q // 2]
    answer[wrong] = (truth[wrong] + 1 + rng.integers(0, n_ref - 1, wrong.size)) % n_ref
    r = np.eye(n_ref, dtype=np.float32)
    # a wrong answer puts the truth second, or (every other one) last, below the others' 0
    sign = np.where(np.arange(n_q) % 2 == 0, 0.1, -0.1)[:, None]
    q = r[answer] * 0.9 + sign * r[truth]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q_lat = lat[truth] + rng.normal(0, 0.0002, n_q)
    q_lon = lon[truth] + rng.normal(0, 0.0002, n_q)
    files = []
    for name, n in (("ref", n_ref), ("query", n_q)):
        for i in range(n):
            path = tmp_path / f"{name}{i:02d}.png"
            size = (CELL, CELL) if name == "ref" else (3 * CELL, CELL)
            Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3))).save(path)
            files.append(str(path))
    semis = None
    if semi:  # the reference after each query's truth is a semi-positive
        semis = np.stack([ref_labels[(truth + 1) % n_ref], np.full(n_q, -1)], axis=1)
    ev = EvalSet("toy", files[n_ref:], files[:n_ref], ref_labels[truth], ref_labels, semi_positives=semis,
                 reference_lat=lat, reference_lon=lon, query_lat=q_lat, query_lon=q_lon)
    return ev, q, r, truth, answer


def test_errors_are_the_distance_to_the_top1_centre(tmp_path):
    ev, q, r, truth, answer = world(tmp_path)
    res = split_results(q, r, ev, protocol="sample4geo", k=3, device="cpu")
    np.testing.assert_array_equal(res.top[:, 0], answer)
    np.testing.assert_array_equal(res.top1, answer)  # from the metrics' own pass
    want = [haversine_np(ev.query_lat[i], ev.query_lon[i], ev.reference_lat[a], ev.reference_lon[a])
            for i, a in enumerate(answer)]
    np.testing.assert_allclose(res.error_m, want, rtol=1e-9, atol=1e-6)
    # a lat/lon swap anywhere would move every point by thousands of km
    assert res.error_m.max() < 2000
    assert res.metrics["error_median_m"] == pytest.approx(np.median(want))
    assert res.metrics["error_mean_m"] == pytest.approx(np.mean(want))
    for m in WITHIN_M:
        assert res.metrics[within_key(m)] == pytest.approx(100 * np.mean(np.array(want) <= m))
    scores = q @ r.T
    want_rank = (scores > scores[np.arange(len(truth)), truth][:, None]).sum(axis=1)
    np.testing.assert_array_equal(res.rank, want_rank)
    assert (res.rank > 1).any() and (res.rank == 1).any()
    np.testing.assert_allclose(res.top_scores, np.take_along_axis(scores, res.top, axis=1), atol=1e-6)
    want_top = np.argsort(-scores, axis=1, kind="stable")[:, :3]  # equal scores by lower row
    np.testing.assert_array_equal(res.top, want_top)
    np.testing.assert_array_equal(res.true_reference, truth)
    assert res.metrics["R@1"] == pytest.approx(100 * np.mean(answer == truth))


def test_a_single_reference_is_every_top1():
    q = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]], dtype=np.float32)
    rows, scores = top_references(q, np.array([[0.0, 1.0]], dtype=np.float32), k=5, device="cpu")
    np.testing.assert_array_equal(rows, [[0], [0], [0]])
    np.testing.assert_allclose(scores, [[0.0], [0.8], [-1.0]])


def test_error_summary_thresholds_and_unknown_positions():
    err = np.array([0.0, 10.0, 25.0, 30.0, 60.0, 100.0, 999.0, 1500.0, np.nan])
    s = error_summary(err)
    assert s["error_median_m"] == pytest.approx(45.0) and s["error_mean_m"] == pytest.approx(2724.0 / 8)
    assert (s["within_25m"], s["within_50m"], s["within_100m"], s["within_1km"]) == (37.5, 50.0, 75.0, 87.5)
    assert error_summary(None) == {} and error_summary(np.array([np.nan])) == {}


def test_no_positions_means_no_error(tmp_path):
    ev, q, r, _, _ = world(tmp_path)
    ev = EvalSet("toy", ev.query_files, ev.reference_files, ev.query_labels, ev.reference_labels)
    res = split_results(q, r, ev, protocol="sample4geo", device="cpu")
    assert res.error_m is None and not any(k.startswith(("error", "within")) for k in res.metrics)
    assert res.top is None and res.top_scores is None  # the top-k lists are a second pass, on request


def test_per_query_csv_round_trips(tmp_path):
    ev, q, r, truth, answer = world(tmp_path, seed=1)
    res = split_results(q, r, ev, protocol="sample4geo", k=4, device="cpu")
    out = tmp_path / "out" / "per_query.csv"
    write_per_query_csv(out, ev, res, root=tmp_path)
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == per_query_header(4)
        rows = list(reader)
    assert len(rows) == len(ev.query_files)
    np.testing.assert_array_equal([int(x["rank"]) for x in rows], res.rank)
    for i, row in enumerate(rows):
        assert tmp_path / row["query"] == tmp_path / ev.query_files[i]
        assert row["true_reference"] == f"ref{truth[i]:02d}.png"
        assert [row[f"top{j}_reference"] for j in range(1, 5)] == [f"ref{t:02d}.png" for t in res.top[i]]
        np.testing.assert_allclose([float(row[f"top{j}_score"]) for j in range(1, 5)], res.top_scores[i], atol=1e-6)
        assert float(row["error_m"]) == pytest.approx(res.error_m[i], abs=0.006)
        assert float(row["query_lat"]) == pytest.approx(ev.query_lat[i], abs=1e-7)
    # R@k recomputed from the file equals the metrics
    ranks = np.array([int(x["rank"]) for x in rows])
    assert 100 * np.mean(ranks < 1) == pytest.approx(res.metrics["R@1"])


@pytest.mark.parametrize("count, seed", [(4, 0), (5, 3), (10, 1), (99, 2)])
def test_pick_examples_mixes_successes_and_failures(count, seed):
    rank = np.array([0, 3, 0, 0, 1, 0, 7, 0, 0, 0, 2, 0])  # 8 successes, 4 failures
    picked = pick_examples(rank, count, seed)
    np.testing.assert_array_equal(picked, pick_examples(rank, count, seed))  # reproducible
    n = min(count, rank.size)
    n_bad = min(4, max(n // 2, n - 8))
    assert picked.size == n and np.unique(picked).size == n
    assert (rank[picked] > 0).sum() == n_bad
    ok, bad = picked[rank[picked] == 0], picked[rank[picked] > 0]
    np.testing.assert_array_equal(picked, np.concatenate([np.sort(ok), np.sort(bad)]))


def test_pick_examples_tops_up_from_the_other_group():
    picked = pick_examples(np.array([0, 0, 0, 5, 0, 0]), 4, 0)
    assert picked.size == 4 and (np.array([0, 0, 0, 5, 0, 0])[picked] > 0).sum() == 1


@pytest.mark.parametrize("semi", [False, True])
def test_picture_grid_frames_and_cells(tmp_path, semi):
    ev, q, r, truth, answer = world(tmp_path, n_ref=16, n_q=12, seed=2, semi=semi)
    res = split_results(q, r, ev, protocol="sample4geo", k=5, device="cpu")
    picked = pick_examples(res.rank, 6, seed=4)
    # a failure whose truth is not in the top 5: every row gets one more cell, the truth
    assert any(truth[p] not in res.top[p] for p in picked)
    out = tmp_path / "pic" / "examples.png"
    save_png(out, examples_picture(ev, res, picked, name="toy test", seed=4))
    with Image.open(out) as img:
        assert img.format == "PNG"
        pic = img.convert("RGB")
    n_cols = 5 + int(any(truth[p] not in res.top[p] for p in picked))
    size, boxes = grid_boxes(len(picked), n_cols, query_width([(3 * CELL, CELL)], CELL), CELL, 2)
    assert pic.size == size
    for row, p in enumerate(picked):
        cells = list(res.top[p]) + ([] if n_cols == 5 else [truth[p] if truth[p] not in res.top[p] else None])
        for col, ref in enumerate(cells, start=1):
            left, top, right, bottom = boxes[row][col]
            if ref is None:  # the padding cell of a row that found its truth: blank
                assert pic.getpixel((left + 1, top + 1)) == (255, 255, 255)
                continue
            if ref == truth[p]:
                verdict = "true"
            elif semi and ref == (truth[p] + 1) % 16:
                verdict = "semi"
            else:
                verdict = "wrong"
            assert pic.getpixel((left + 1, top + 1)) == COLOURS[verdict], (row, col)
            with Image.open(ev.reference_files[ref]) as tile:
                colour = tile.convert("RGB").getpixel((0, 0))
            assert pic.getpixel(((left + right) // 2, (top + bottom) // 2)) == colour
        # the query sits in column 0 without a frame
        left, top, right, bottom = boxes[row][0]
        with Image.open(ev.query_files[p]) as query:
            assert pic.getpixel(((left + right) // 2, (top + bottom) // 2)) == query.convert("RGB").getpixel((0, 0))
        assert pic.getpixel((left + FRAME // 2, top + FRAME // 2)) == (255, 255, 255)
