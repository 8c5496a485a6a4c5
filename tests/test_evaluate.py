"""retrieval_metrics against the reference protocols of tests/reference.py (exact-arithmetic
embeddings, so ties are real and the dense oracle sees the very scores the blocks see)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import sample4geo_protocol, university1652_protocol

from s4g.errors import UserInputError
from s4g.retrieval.evaluate import PROTOCOLS, as_embeddings, evaluate_retrieval, one_percent_k, retrieval_metrics


def exact_embeddings(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    # entries in {-2..2}/4: every dot product is a multiple of 1/16 well inside float32's
    # exact range, so any summation order gives the same score and ties are real ties
    return (rng.integers(-2, 3, size=(n, d)) / 4.0).astype(np.float32)


def oracle(q, r, ql, rl, semi=None, ks=(1, 5, 10), protocol="sample4geo"):
    """What `protocol`'s reference evaluation reports on the dense score matrix, plus the
    metrics s4g reports beside them: AP (University-1652's) and hit rate (Sample4Geo's)."""
    scores = q.astype(np.float64) @ r.astype(np.float64).T
    s4g_way = sample4geo_protocol(scores, ql, rl, semi, ks)
    uni_way = university1652_protocol(scores, ql, rl, ks)
    for k in ks:  # the two reference shapes agree on R@k: a check of the oracles themselves
        assert s4g_way[f"R@{k}"] == pytest.approx(uni_way[f"R@{k}"], abs=1e-9)
    out = dict(s4g_way if protocol == "sample4geo" else uni_way)
    out["AP"] = uni_way["AP"]
    if semi is not None:
        out["hit_rate"] = s4g_way["hit_rate"]
    return out


def assert_same(got, want):
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def one_positive_world(seed, n_q=37, n_distractors=16, d=6):
    rng = np.random.default_rng(seed)
    r = exact_embeddings(rng, n_q + n_distractors, d)
    q = exact_embeddings(rng, n_q, d)
    rl = rng.permutation(np.arange(n_q + n_distractors) + 100)
    ql = rng.permutation(rl[rl < 100 + n_q])
    return q, r, ql, rl


def several_positives_world(rng, max_per_label, n_labels=9, n_distractors=11, n_q=29, d=4):
    per_label = rng.integers(1, max_per_label + 1, size=n_labels)
    rl = np.concatenate([np.repeat(np.arange(n_labels), per_label), np.full(n_distractors, 50)])
    rl = rng.permutation(rl)  # 50: distractors
    r = exact_embeddings(rng, rl.size, d)  # small d: many exact ties
    ql = rng.integers(0, n_labels, size=n_q)
    return exact_embeddings(rng, n_q, d), r, ql, rl


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("block", [(5, 7), (1, 1), (64, 3), (4, 1000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_positive_with_distractors(seed, block, protocol):
    q, r, ql, rl = one_positive_world(seed)  # R = 53: Sample4Geo's R@1% is 0
    got = retrieval_metrics(q, r, ql, rl, ks=(1, 3, 5, 10), protocol=protocol, device="cpu", block=block)
    assert_same(got, oracle(q, r, ql, rl, ks=(1, 3, 5, 10), protocol=protocol))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("max_per_label", [3, 12])  # <= 4: compare-and-count; more: histogram
def test_several_positives_per_query(seed, max_per_label, protocol):
    q, r, ql, rl = several_positives_world(np.random.default_rng(seed), max_per_label)
    got = retrieval_metrics(q, r, ql, rl, protocol=protocol, device="cpu", block=(4, 6))
    assert_same(got, oracle(q, r, ql, rl, protocol=protocol))


def semi_rows(rng, ql, rl, width=5):
    """(Q, width) semi-positive labels: some drawn from the references (distractor labels
    included), some repeated, some the query's own label, one absent label, -1 padding."""
    semi = np.full((ql.size, width), -1, dtype=np.int64)
    for i in range(ql.size):
        n = rng.integers(0, width + 1)
        semi[i, :n] = rng.choice(np.unique(rl), size=n, replace=True)
        if n and rng.random() < 0.3:
            semi[i, rng.integers(0, n)] = ql[i]
    semi[0, :3] = [semi[0, 0], semi[0, 0], 12345]  # a repeat and a label no reference has
    return rng.permuted(semi, axis=1)  # padding not only at the end


@pytest.mark.parametrize("block", [(6, 5), (1, 3), (64, 1000)])
@pytest.mark.parametrize("max_per_label", [1, 3, 12])
@pytest.mark.parametrize("seed", [6, 7])
def test_semi_positives_hit_rate(seed, max_per_label, block):
    rng = np.random.default_rng(seed)
    q, r, ql, rl = several_positives_world(rng, max_per_label, n_q=41, d=3)
    semi = semi_rows(rng, ql, rl)
    got = retrieval_metrics(q, r, ql, rl, semi, device="cpu", block=block)
    assert_same(got, oracle(q, r, ql, rl, semi))
    assert got["hit_rate"] >= got["R@1"]


# one query [1, 0] against references [score, 0]: (scores, labels, semi row, hit?); the
# query's label is 0. Labels 2, 3: semi-positives where listed; 1: a plain negative.
HIT_CASES = {
    "semi > negative > positive: miss": ([1, 2, 3], [0, 1, 2], [2, -1], False),
    "only semi-positives above: hit": ([1, 3, 2, 0.5], [0, 2, 3, 1], [3, 2], True),
    "negative ties the positive: hit": ([1, 1, 0.5], [0, 1, 2], [-1, -1], True),
    "tie, and a semi-positive above: hit": ([1, 1, 2], [0, 1, 2], [2], True),
    "every row of a semi label counts: hit": ([2, 1, 3, 0.5], [2, 0, 2, 1], [-1, 2], True),
    "repeats count once: hit": ([1, 2, 0.5], [0, 2, 1], [2, 2, 2, -1], True),
    "own label is no semi-positive: miss": ([1, 2, 1.5], [0, 1, 0], [0, -1], False),
    "best of several positives decides: hit": ([1, 2, 3, 4], [0, 1, 0, 2], [2, 77], True),
    "semi first, best positive behind a negative: miss": ([1, 2, 3, 4, 5], [0, 1, 0, 1, 2], [2, -1], False),
}


@pytest.mark.parametrize("block", [(1, 1), (1, 2), (1, 8)])
@pytest.mark.parametrize("case", list(HIT_CASES))
def test_hit_rate_hand_cases(case, block):
    scores, labels, semi_row, hit = HIT_CASES[case]
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    r = np.array([[s, 0.0] for s in scores], dtype=np.float32)
    semi = np.array([semi_row])
    got = retrieval_metrics(q, r, [0], labels, semi, device="cpu", block=block)
    assert got["hit_rate"] == (100.0 if hit else 0.0)
    assert_same(got, oracle(q, r, np.array([0]), np.array(labels), semi))


def test_ties_count_for_the_positive():
    # the non-positive row 0 ties the positive row 1 exactly: rank 0; the second positive
    # (row 2) then sits at rank 2 behind the tied non-positive
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], dtype=np.float32)
    got = retrieval_metrics(q, r, [7], [3, 7, 7], device="cpu", block=(1, 1))
    assert got["R@1"] == 100.0 and got["AP"] == pytest.approx(100.0 * (1 + (1 / 2 + 2 / 3) / 2) / 2)
    for protocol in PROTOCOLS:
        got = retrieval_metrics(q, r, [7], [3, 7, 7], protocol=protocol, device="cpu", block=(1, 2))
        assert_same(got, oracle(q, r, np.array([7]), np.array([3, 7, 7]), protocol=protocol))
    # one strictly higher non-positive: rank 1
    r[0, 0] = 2.0
    got = retrieval_metrics(q, r, [7], [3, 7, 7], device="cpu", block=(1, 2))
    assert got["R@1"] == 0.0 and got["R@5"] == 100.0


# R -> (k of Sample4Geo's rank < R // 100, k of University-1652's rank < round(R * 0.01) + 1)
ONE_PERCENT_K = {50: (0, 1), 99: (0, 2), 150: (1, 3), 160: (1, 3), 250: (2, 3), 350: (3, 5), 8884: (88, 90)}


@pytest.mark.parametrize("n_ref", list(ONE_PERCENT_K))
def test_recall_at_one_percent_per_protocol(n_ref):
    # 1-D scores: distinct integers, except that a non-positive exactly ties the positive of
    # rank k - 1 at the University-1652 threshold (and at Sample4Geo's where they are apart):
    # that query counts only under the strictly-higher rule. One query per reference in
    # descending score order, so the ranks run from 0 past both thresholds.
    k_s4g, k_uni = ONE_PERCENT_K[n_ref]
    level = np.arange(n_ref, 0, -1).astype(np.float32)  # score of the i-th reference in order
    tied = [k_uni - 1] + ([k_s4g - 1] if 0 <= k_s4g - 1 < k_uni - 2 else [])
    for t in tied:
        level[t + 1] = level[t]
    rng = np.random.default_rng(n_ref)
    order = rng.permutation(n_ref)  # the i-th reference in score order sits at row order[i]
    values = np.empty(n_ref, np.float32)
    values[order] = level
    r = np.stack([values, rng.integers(-4, 5, n_ref).astype(np.float32)], axis=1)
    rl = rng.permutation(n_ref) + 1000
    n_q = min(n_ref, 2 * k_uni + 6)
    ql = rl[order[:n_q]]
    q = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (n_q, 1))
    rank = np.array([(values > level[i]).sum() for i in range(n_q)])
    for t in tied:
        assert rank[t] == rank[t + 1] == t
    assert ((rank >= k_s4g) & (rank < k_uni)).any()  # floor and round disagree on some query
    for protocol, k in zip(PROTOCOLS, ONE_PERCENT_K[n_ref]):
        assert one_percent_k(n_ref, protocol) == k
        got = retrieval_metrics(q, r, ql, rl, protocol=protocol, device="cpu", block=(16, 1000))
        assert got["R@1%"] == pytest.approx(100 * np.mean(rank < k), abs=1e-9)
        assert_same(got, oracle(q, r, ql, rl, protocol=protocol))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("n_ref", [160, 250, 8884])
def test_recall_at_one_percent_random_worlds(n_ref, protocol):
    q, r, ql, rl = one_positive_world(n_ref, n_q=30, n_distractors=n_ref - 30, d=3)
    got = retrieval_metrics(q, r, ql, rl, protocol=protocol, device="cpu", block=(7, 500))
    assert_same(got, oracle(q, r, ql, rl, protocol=protocol))


@pytest.mark.parametrize("max_per_label", [1, 3, 12])
@pytest.mark.parametrize("seed", [20, 21])
def test_per_query_ranks_and_best_positives(seed, max_per_label):
    # the per-query output is what the metrics were counted from: ranks per the dense
    # definition (ties included), and the best positive's row and score
    rng = np.random.default_rng(seed)
    q, r, ql, rl = several_positives_world(rng, max_per_label)
    got = evaluate_retrieval(q, r, ql, rl, ks=(1, 2, 3), device="cpu", block=(4, 6))
    scores = q.astype(np.float64) @ r.astype(np.float64).T
    pos = rl[None, :] == ql[:, None]
    best = np.where(pos, scores, -np.inf).max(axis=1)
    want_rank = ((scores > best[:, None]) & ~pos).sum(axis=1)
    np.testing.assert_array_equal(got.rank, want_rank)
    assert got.rank.dtype == np.int64 and got.best_positive.dtype == np.int64
    assert (rl[got.best_positive] == ql).all()
    np.testing.assert_array_equal(scores[np.arange(ql.size), got.best_positive], best)
    np.testing.assert_array_equal(got.best_positive_score, best)
    for k in (1, 2, 3):
        assert got.metrics[f"R@{k}"] == pytest.approx(100 * np.mean(want_rank < k))
    assert got.metrics == retrieval_metrics(q, r, ql, rl, ks=(1, 2, 3), device="cpu")
    # top-1: the best positive when nothing beats it (ties do not), else the best non-positive,
    # lowest row among equal scores (D=4 exact scores: ties are frequent)
    other = np.where(pos, -np.inf, scores)
    first_best_other = np.argmax(other == other.max(axis=1, keepdims=True), axis=1)
    want_top1 = np.where(want_rank == 0, got.best_positive, first_best_other)
    np.testing.assert_array_equal(got.top1, want_top1)
    for block in ((1, 1), (3, 5), (64, 1000)):
        np.testing.assert_array_equal(evaluate_retrieval(q, r, ql, rl, device="cpu", block=block).top1, want_top1)


def test_torch_inputs_match_numpy():
    q, r, ql, rl = one_positive_world(9)
    a = retrieval_metrics(q, r, ql, rl, device="cpu", block=(8, 8))
    b = retrieval_metrics(torch.from_numpy(q), torch.from_numpy(r), torch.from_numpy(ql),
                          torch.from_numpy(rl), device="cpu")
    assert a == b


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_normalised_random_embeddings_match_dense(protocol):
    # no exact arithmetic here: ties are absent, and every metric must still agree
    rng = np.random.default_rng(10)
    q = rng.normal(size=(300, 32)).astype(np.float32)
    r = rng.normal(size=(500, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    rl = np.arange(500)
    ql = rng.permutation(500)[:300]
    q = (0.5 * q + 0.5 * r[ql]).astype(np.float32)  # make the positive likely near the top
    got = retrieval_metrics(q, r, ql, rl, protocol=protocol, device="cpu", block=(64, 128))
    assert_same(got, oracle(q, r, ql, rl, protocol=protocol))


@pytest.mark.parametrize("protocol", ["", "University1652", "cvusa", None])
def test_unknown_protocol_is_a_user_input_error(protocol):
    q, r, ql, rl = one_positive_world(11)
    with pytest.raises(UserInputError, match="protocol.*'sample4geo', 'university1652'"):
        retrieval_metrics(q, r, ql, rl, protocol=protocol, device="cpu")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(ql=np.array([100, 101, 9999] + list(a["ql"][3:]))), "no positive"),
        (lambda a: a.update(ql=a["ql"][:-1]), "query_labels"),
        (lambda a: a.update(rl=a["rl"][:-1]), "reference_labels"),
        (lambda a: a["q"].__setitem__((2, 1), np.nan), "NaN"),
        (lambda a: a.update(r=a["r"][:, :4]), "dimension"),
        (lambda a: a.update(ql=a["ql"].astype(np.float32)), "integer"),
        (lambda a: a.update(semi=np.zeros((3, 2), dtype=np.int64)), "semi_positives"),
    ],
)
def test_bad_input_is_a_value_error(change, message):
    q, r, ql, rl = one_positive_world(11)
    args = {"q": q, "r": r, "ql": ql, "rl": rl, "semi": None}
    change(args)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(args["q"], args["r"], args["ql"], args["rl"], args["semi"], device="cpu")


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_every_non_finite_value_is_found_and_large_finite_rows_pass(value):
    big = np.full((3, 4), 3e38, dtype=np.float32)  # finite, but each row's sum overflows
    assert as_embeddings(big, "x", torch.device("cpu")).shape == (3, 4)
    big[1, 2] = value
    with pytest.raises(UserInputError, match=r"x: 1 row\(s\) hold NaN or inf \(first rows \[1\]\)"):
        as_embeddings(big, "x", torch.device("cpu"))
    mixed = np.zeros((2, 3), dtype=np.float32)
    mixed[0, :2] = [np.inf, -np.inf]  # a row whose sum is NaN, not inf
    with pytest.raises(UserInputError, match=r"first rows \[0\]"):
        as_embeddings(mixed, "x", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gpu_path_equals_dense(protocol):
    rng = np.random.default_rng(11)
    rl = rng.permutation(np.concatenate([np.repeat(np.arange(20), 6), np.full(30, 99)]))
    r = exact_embeddings(rng, rl.size)
    ql = rng.integers(0, 20, size=50)
    q = exact_embeddings(rng, ql.size)
    semi = semi_rows(rng, ql, rl, width=3)
    got = retrieval_metrics(q, r, ql, rl, semi_positives=semi, protocol=protocol, device="cuda", block=(16, 32))
    assert_same(got, oracle(q, r, ql, rl, semi, protocol=protocol))
