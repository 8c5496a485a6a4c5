"""topk_merge over column blocks equals a stable dense argsort, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import topk_dense

from s4g.errors import UserInputError
from s4g.sampling import topk_init, topk_merge


def blocked(scores: np.ndarray, k: int, exclude: np.ndarray, width: int):
    idx, val = topk_init(scores.shape[0], k)
    for c0 in range(0, scores.shape[1], width):
        idx, val = topk_merge(scores[:, c0 : c0 + width], c0, k, exclude, idx, val)
    return idx, val


@st.composite
def cases(draw):
    q, r = draw(st.integers(1, 12)), draw(st.integers(1, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        # few levels: many exact ties, duplicate columns, -0.0 vs 0.0, ±inf as ordinary scores
        levels = np.array([0.5, 0.0, -0.0, -1.0, np.inf, -np.inf], dtype=np.float32)
        scores = rng.choice(levels, (q, r))
    else:
        scores = rng.standard_normal((q, r)).astype(np.float32)
        scores[:, r // 2 :] = scores[:, : r - r // 2]  # duplicate columns
    exclude = rng.integers(-1, r, q)
    return scores, exclude, draw(st.integers(1, 250)), draw(st.integers(1, 80))


@settings(max_examples=150, deadline=None)
@given(cases())
def test_blocks_equal_dense_argsort(case):
    scores, exclude, k, width = case
    idx, val = blocked(scores, k, exclude, width)
    want_idx, want_val = topk_dense(scores, k, exclude)
    assert idx.dtype == np.int64 and val.dtype == np.float32 and idx.shape == (scores.shape[0], k)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)


def test_blocks_out_of_order_and_k_above_block_width():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((30, 100)).astype(np.float32)
    scores[:, 60:] = scores[:, :40]
    exclude = np.full(30, -1)
    idx, val = topk_init(30, 50)
    for c0 in (80, 0, 40, 20, 60):  # any block order gives the same result
        idx, val = topk_merge(scores[:, c0 : c0 + 20], c0, 50, exclude, idx, val)
    want_idx, want_val = topk_dense(scores, 50, exclude)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)


def test_accepts_non_contiguous_and_float64_scores():
    scores = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2]
    idx, val = topk_merge(scores, 0, 2, [-1, 2, -1, -1], *topk_init(4, 2))
    np.testing.assert_array_equal(idx, [[2, 1], [1, 0], [2, 1], [2, 1]])


@pytest.mark.parametrize(
    ("scores", "offset", "k", "exclude", "message"),
    [
        ([[np.nan, 1.0]], 0, 1, [-1], "scores[0, 0] is NaN"),
        ([[1.0, 2.0], [3.0, np.nan]], 0, 1, [-1, -1], "scores[1, 1] is NaN"),
        ([[1.0, 2.0]], -1, 1, [-1], "col_offset must be >= 0"),
        ([[1.0, 2.0]], 0, 0, [-1], "k must be at least 1"),
        ([[1.0, 2.0]], 0, 1, [-1, -1], "exclude must have one entry per score row (1)"),
        ([[1.0, 2.0]], 0, 1, [-3], "exclude[0] = -3"),
        ([1.0, 2.0], 0, 1, [-1], "scores must be 2-dimensional"),
    ],
)
def test_bad_input(scores, offset, k, exclude, message):
    best = topk_init(len(exclude), max(k, 1))
    with pytest.raises(UserInputError) as info:
        topk_merge(scores, offset, k, exclude, *best)
    assert message in str(info.value)


def test_bad_running_state():
    idx, val = topk_init(1, 2)
    with pytest.raises(UserInputError, match="best_idx and best_val must have shape"):
        topk_merge([[1.0]], 0, 3, [-1], idx, val)
    with pytest.raises(UserInputError, match=r"best_idx and best_val must both have shape \(1, 1\)"):
        topk_merge([[1.0]], 0, 1, [-1], *topk_init(2, 1))  # one row too many: Rust's length check
    with pytest.raises(UserInputError, match=r"best_idx\[0, 1\] = -5"):
        topk_merge([[1.0]], 0, 2, [-1], np.array([[0, -5]]), val)
