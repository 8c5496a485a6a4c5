"""retrieval_metrics against a dense computation written here (exact-arithmetic embeddings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s4g.evaluate import retrieval_metrics


def exact_embeddings(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    # entries in {-2..2}/4: every dot product is a multiple of 1/16 well inside float32's
    # exact range, so any summation order gives the same score and ties are real ties
    return (rng.integers(-2, 3, size=(n, d)) / 4.0).astype(np.float32)


def dense_metrics(q, r, ql, rl, semi=None, ks=(1, 5, 10)):
    """The definitions of design.md, one query at a time, on the full score matrix."""
    scores = q.astype(np.float64) @ r.astype(np.float64).T
    n_ref = r.shape[0]
    ranks, aps, hits = [], [], []
    for i in range(q.shape[0]):
        s, pos = scores[i], rl == ql[i]
        ranks.append(int((s[~pos] > s[pos].max()).sum()))
        # ranking: score desc, positives before non-positives of equal score, index asc
        order = np.lexsort((np.arange(n_ref), ~pos, -s))
        r_pos = np.flatnonzero(pos[order])
        ap = 0.0
        for j, rj in enumerate(r_pos):
            prec_before = 1.0 if rj == 0 else j / rj
            ap += (prec_before + (j + 1) / (rj + 1)) / 2
        aps.append(ap / len(r_pos))
        if semi is not None:
            top = order[0]
            hits.append(bool(pos[top]) or rl[top] in set(semi[i][semi[i] != -1].tolist()))
    ranks = np.array(ranks)
    out = {f"R@{k}": 100 * np.mean(ranks < k) for k in ks}
    out["R@1%"] = 100 * np.mean(ranks < max(1, round(n_ref / 100)))
    out["AP"] = 100 * np.mean(aps)
    if semi is not None:
        out["hit_rate"] = 100 * np.mean(hits)
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


@pytest.mark.parametrize("block", [(5, 7), (1, 1), (64, 3), (4, 1000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_positive_with_distractors(seed, block):
    q, r, ql, rl = one_positive_world(seed)
    got = retrieval_metrics(q, r, ql, rl, ks=(1, 3, 5, 10), device="cpu", block=block)
    assert_same(got, dense_metrics(q, r, ql, rl, ks=(1, 3, 5, 10)))


@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("max_per_label", [3, 12])  # <= 4: compare-and-count; more: histogram
def test_several_positives_per_query(seed, max_per_label):
    rng = np.random.default_rng(seed)
    per_label = rng.integers(1, max_per_label + 1, size=9)
    rl = np.concatenate([np.repeat(np.arange(9), per_label), np.full(11, 50)])  # 50: distractors
    rl = rng.permutation(rl)
    r = exact_embeddings(rng, rl.size, 4)  # D=4: many exact ties
    ql = rng.integers(0, 9, size=29)
    q = exact_embeddings(rng, 29, 4)
    got = retrieval_metrics(q, r, ql, rl, device="cpu", block=(4, 6))
    assert_same(got, dense_metrics(q, r, ql, rl))


@pytest.mark.parametrize("seed", [6, 7])
def test_semi_positives_hit_rate(seed):
    q, r, ql, rl = one_positive_world(seed, n_q=41, n_distractors=9, d=3)
    rng = np.random.default_rng(seed)
    semi = np.full((41, 4), -1, dtype=np.int64)
    for i in range(41):
        n = rng.integers(0, 5)
        semi[i, :n] = rng.choice(rl, size=n, replace=False)
    got = retrieval_metrics(q, r, ql, rl, semi, device="cpu", block=(6, 5))
    want = dense_metrics(q, r, ql, rl, semi)
    assert_same(got, want)
    assert got["hit_rate"] >= got["R@1"]


def test_ties_count_for_the_positive():
    # the non-positive row 0 ties the positive row 1 exactly: rank 0; the second positive
    # (row 2) then sits at rank 2 behind the tied non-positive
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0]], dtype=np.float32)
    got = retrieval_metrics(q, r, [7], [3, 7, 7], device="cpu", block=(1, 1))
    assert got["R@1"] == 100.0 and got["AP"] == pytest.approx(100.0 * (1 + (1 / 2 + 2 / 3) / 2) / 2)
    assert_same(got, dense_metrics(q, r, np.array([7]), np.array([3, 7, 7])))
    # one strictly higher non-positive: rank 1
    r[0, 0] = 2.0
    got = retrieval_metrics(q, r, [7], [3, 7, 7], device="cpu", block=(1, 2))
    assert got["R@1"] == 0.0 and got["R@5"] == 100.0


def test_recall_at_one_percent_uses_round():
    q, r, ql, rl = one_positive_world(8, n_q=20, n_distractors=230, d=5)  # R = 250 -> k = 2
    got = retrieval_metrics(q, r, ql, rl, device="cpu", block=(7, 64))
    scores = q @ r.T
    ranks = np.array([(scores[i][rl != ql[i]] > scores[i][rl == ql[i]].max()).sum() for i in range(20)])
    assert got["R@1%"] == pytest.approx(100 * np.mean(ranks < 2))


def test_torch_inputs_match_numpy():
    q, r, ql, rl = one_positive_world(9)
    a = retrieval_metrics(q, r, ql, rl, device="cpu", block=(8, 8))
    b = retrieval_metrics(torch.from_numpy(q), torch.from_numpy(r), torch.from_numpy(ql),
                          torch.from_numpy(rl), device="cpu")
    assert a == b


def test_normalised_random_embeddings_match_dense():
    # no exact arithmetic here: ties are absent, and R@k must still agree with a dense run
    rng = np.random.default_rng(10)
    q = rng.normal(size=(300, 32)).astype(np.float32)
    r = rng.normal(size=(500, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    rl = np.arange(500)
    ql = rng.permutation(500)[:300]
    q = (0.5 * q + 0.5 * r[ql]).astype(np.float32)  # make the positive likely near the top
    got = retrieval_metrics(q, r, ql, rl, device="cpu", block=(64, 128))
    assert_same(got, dense_metrics(q, r, ql, rl))


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_path_equals_dense():
    rng = np.random.default_rng(11)
    rl = rng.permutation(np.concatenate([np.repeat(np.arange(20), 6), np.full(30, 99)]))
    r = exact_embeddings(rng, rl.size)
    ql = rng.integers(0, 20, size=50)
    q = exact_embeddings(rng, ql.size)
    semi = rng.integers(-1, 20, size=(50, 3))
    got = retrieval_metrics(q, r, ql, rl, semi_positives=semi, device="cuda", block=(16, 32))
    assert_same(got, dense_metrics(q, r, ql, rl, semi))
