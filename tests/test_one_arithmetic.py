"""One arithmetic: ranks, metrics and mined lists do not depend on how queries and references
are cut into blocks, and a duplicate of a positive under another label never counts above it.

The oracle scores each query in one product of its own (float64, the same summation for
every reference row, so equal rows score equally) and applies the reference protocols.
S4G_HYPOTHESIS_EXAMPLES raises the number of examples for a longer local run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from reference import sample4geo_protocol, university1652_protocol

from s4g.retrieval.evaluate import evaluate_retrieval
from s4g.retrieval.mining import similar_references
from s4g.retrieval.scoring import duplicate_groups

# The case that ranked 1 when the query sat alone in its chunk: rows 0 (the positive) and 1
# (another label) are equal; MKL's single-row product scores them one ulp apart.
MINIMAL_QUERY = np.array([-2.68, 0.71, -0.01, 0.01, 1.60, 1.33, -0.80, 1.00], dtype=np.float32)
MINIMAL_POSITIVE = np.array([-0.37, 0.82, 1.20, 1.64, -0.20, 1.34, 1.64, 0.33], dtype=np.float32)
EXAMPLES = int(os.environ.get("S4G_HYPOTHESIS_EXAMPLES", "40"))


def minimal_references() -> tuple[np.ndarray, np.ndarray]:
    rows = [MINIMAL_POSITIVE, MINIMAL_POSITIVE] + [-k * MINIMAL_QUERY for k in range(2, 10)]
    return np.stack(rows).astype(np.float32), np.array([7, 8, *range(100, 108)])


@pytest.mark.parametrize("n_queries", [1, 2, 16, 257])
@pytest.mark.parametrize("block", [None, (1, 1), (1, 10), (2, 3), (3, 4), (256, 7)])
def test_minimal_case_ranks_zero_in_every_chunking(n_queries, block):
    r, rl = minimal_references()
    q = np.repeat(MINIMAL_QUERY[None], n_queries, axis=0)
    got = evaluate_retrieval(q, r, np.full(n_queries, 7), rl, device="cpu", block=block)
    np.testing.assert_array_equal(got.rank, 0)
    np.testing.assert_array_equal(got.top1, 0)
    assert got.metrics["R@1"] == 100.0


def test_result_of_a_query_does_not_depend_on_its_position():
    # 2,049 queries: with the default 2,048-row blocks the last one sits alone in its block
    rng = np.random.default_rng(0)
    r0, rl0 = minimal_references()
    extra = rng.normal(size=(40, 8)).astype(np.float32)
    r = np.concatenate([r0, extra, extra[:10]])  # duplicated references under other labels
    rl = np.concatenate([rl0, np.arange(200, 240), np.arange(300, 310)])
    q = rng.normal(size=(2049, 8)).astype(np.float32)
    ql = rng.choice(np.arange(200, 240), size=2049)
    q[-1], ql[-1] = MINIMAL_QUERY, 7
    _, want_rank, _ = oracle(q, r, ql, rl, None, (1,))
    last = evaluate_retrieval(q, r, ql, rl, device="cpu")
    np.testing.assert_array_equal(last.rank, want_rank)
    swap = np.r_[2048, 1:2048, 0]
    first = evaluate_retrieval(q[swap], r, ql[swap], rl, device="cpu")
    np.testing.assert_array_equal(first.rank, want_rank[swap])
    assert last.metrics == first.metrics


def make_world(seed: int, exact: bool, d: int, n_labels: int, max_pos: int, n_dup: int, n_q: int):
    """References: 1..max_pos positives per label, distractors, and n_dup copies of positive
    rows under other labels; queries: random rows, copies of references, near-copies."""
    rng = np.random.default_rng(seed)

    def values(n):
        if exact:  # multiples of 1/4 in [-1/2, 1/2]: every sum is exact, ties are real
            return (rng.integers(-2, 3, size=(n, d)) / 4.0).astype(np.float32)
        return rng.normal(size=(n, d)).astype(np.float32)

    per_label = rng.integers(1, max_pos + 1, size=n_labels)
    rl = np.concatenate([np.repeat(np.arange(n_labels), per_label), np.arange(100, 104)])
    r = values(rl.size)
    if n_dup:
        src = rng.integers(0, per_label.sum(), size=n_dup)
        other = (rl[src] + rng.integers(1, n_labels + 1, size=n_dup)) % (n_labels + 1)
        other = np.where(other == n_labels, 100 + rng.integers(0, 4, size=n_dup), other)
        r = np.concatenate([r, r[src]])
        rl = np.concatenate([rl, other])
    order = rng.permutation(rl.size)
    r, rl = r[order], rl[order]
    ql = rng.integers(0, n_labels, size=n_q)
    q = values(n_q)
    kind = rng.integers(0, 3, size=n_q)
    copies = rng.integers(0, rl.size, size=n_q)
    q[kind == 1] = r[copies[kind == 1]]
    near = kind == 2
    q[near] = r[copies[near]] + (values(int(near.sum())) / 8).astype(np.float32)
    semi = rng.integers(-1, n_labels, size=(n_q, 2))
    return q, r, ql, rl, semi


def oracle(q, r, ql, rl, semi, ks):
    scores = (q.astype(np.float64)[:, None, :] * r.astype(np.float64)[None, :, :]).sum(axis=2)
    pos = rl[None, :] == ql[:, None]
    best = np.where(pos, scores, -np.inf).max(axis=1)
    rank = ((scores > best[:, None]) & ~pos).sum(axis=1)
    out = sample4geo_protocol(scores, ql, rl, semi, ks)
    out["AP"] = university1652_protocol(scores, ql, rl, ks)["AP"]
    return scores, rank, out


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    exact=st.booleans(),
    d=st.integers(1, 8),
    n_labels=st.integers(1, 6),
    max_pos=st.integers(1, 6),
    n_dup=st.integers(0, 8),
    n_q=st.integers(1, 12),
    block=st.tuples(st.integers(1, 13), st.integers(1, 30)),
)
@example(seed=0, exact=False, d=8, n_labels=2, max_pos=1, n_dup=4, n_q=5, block=(1, 1))
@example(seed=1, exact=True, d=2, n_labels=3, max_pos=6, n_dup=8, n_q=12, block=(5, 3))
def test_every_chunking_gives_the_one_product_answer(seed, exact, d, n_labels, max_pos, n_dup, n_q, block):
    q, r, ql, rl, semi = make_world(seed, exact, d, n_labels, max_pos, n_dup, n_q)
    ks = (1, 2, 5)
    scores, want_rank, want = oracle(q, r, ql, rl, semi, ks)
    groups = duplicate_groups(torch.from_numpy(r))
    runs = [evaluate_retrieval(q, r, ql, rl, semi, ks, device="cpu", block=b, method=m)
            for b in (None, block) for m in ("torch", "rust")]
    for got in runs:
        np.testing.assert_array_equal(got.rank, want_rank)
        for key, value in want.items():
            assert got.metrics[key] == pytest.approx(value, abs=1e-9), key
        # the first retrieved row: the same one, or an equal row (equal rows are one choice)
        np.testing.assert_array_equal(groups[got.top1], groups[runs[0].top1])
    singles = [evaluate_retrieval(q[i : i + 1], r, ql[i : i + 1], rl, semi[i : i + 1], ks, device="cpu")
               for i in range(n_q)]
    np.testing.assert_array_equal(np.concatenate([s.rank for s in singles]), want_rank)
    for key, value in want.items():
        assert np.mean([s.metrics[key] for s in singles]) == pytest.approx(value, abs=1e-9), key

    # mined lists: stable order of each query's one-product scores, one row excluded
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, r.shape[0])) if r.shape[0] > 1 else None
    if k is None:
        return
    exclude = rng.integers(-1, r.shape[0], size=n_q)
    masked = scores.copy()
    hit = exclude >= 0
    masked[np.flatnonzero(hit), exclude[hit]] = -np.inf
    want_rows = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    for method in ("torch", "rust"):
        for b in (None, block):
            got = similar_references(q, r, k, exclude, device="cpu", block=b, method=method)
            np.testing.assert_array_equal(got, want_rows)
        one = np.concatenate([similar_references(q[i : i + 1], r, k, exclude[i : i + 1], device="cpu",
                                                 method=method) for i in range(n_q)])
        np.testing.assert_array_equal(one, want_rows)


@pytest.mark.parametrize("method", ["torch", "rust"])
def test_mined_list_reaching_every_row_with_duplicates_and_an_exclusion(method):
    # rows 1 and 2 are equal (one group); row 0 is excluded and alone: every other row listed
    r = np.array([[1, 0], [0, 1], [0, 1], [1, 1]], dtype=np.float32)
    q = np.array([[1, 0.5]], dtype=np.float32)
    got = similar_references(q, r, 3, np.array([0]), device="cpu", method=method)
    np.testing.assert_array_equal(got, [[3, 1, 2]])
