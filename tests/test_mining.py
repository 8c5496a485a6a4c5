"""similar_references against a dense stable argsort, on both selection paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s4g.retrieval import mining
from s4g.retrieval.mining import block_topk, similar_references

METHODS = ["torch", "rust"]


def dense_neighbours(q, r, k, exclude):
    scores = q.astype(np.float64) @ r.astype(np.float64).T
    rows = np.arange(q.shape[0])
    ok = exclude >= 0
    scores[rows[ok], exclude[ok]] = -np.inf
    # stable sort of -score: equal scores keep ascending column order
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def tied_embeddings(rng, n, d=3):
    # small integers/4: exact dot products, so many exact ties across block borders
    return (rng.integers(-2, 3, size=(n, d)) / 4.0).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("block", [(3, 5), (64, 7), (1, 200), (8, 1)])
@pytest.mark.parametrize("k", [1, 4, 30])
def test_equals_dense_argsort_with_ties(method, block, k):
    rng = np.random.default_rng(k + block[0])
    q, r = tied_embeddings(rng, 23), tied_embeddings(rng, 41)
    exclude = rng.integers(-1, 41, size=23)
    got = similar_references(q, r, k, exclude, device="cpu", block=block, method=method)
    assert got.dtype == np.int64 and got.shape == (23, k)
    np.testing.assert_array_equal(got, dense_neighbours(q, r, k, exclude))


@pytest.mark.parametrize("method", METHODS)
def test_normalised_embeddings_self_excluded(method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exclude = np.arange(150)
    got = similar_references(x, x, 20, exclude, device="cpu", block=(32, 40), method=method)
    np.testing.assert_array_equal(got, dense_neighbours(x, x, 20, exclude))
    assert not (got == exclude[:, None]).any()


def test_auto_matches_torch_path():
    rng = np.random.default_rng(1)
    q, r = tied_embeddings(rng, 17), tied_embeddings(rng, 33)
    ex = np.full(17, -1)
    a = similar_references(q, r, 9, ex, device="cpu", block=(5, 6))
    b = similar_references(torch.from_numpy(q), torch.from_numpy(r), 9, torch.from_numpy(ex),
                           device="cpu", block=(5, 6), method="torch")
    np.testing.assert_array_equal(a, b)


def test_block_topk_breaks_ties_by_lower_column():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 3.0, 0.0, 3.0], [-0.0, 0.0, -1.0, 0.0, 2.0, 0.0, 0.0]])
    val, idx = block_topk(scores, 3)
    assert sorted(idx[0].tolist()) == [1, 2, 3] and sorted(idx[1].tolist()) == [0, 1, 4]
    assert torch.equal(val, scores.gather(1, idx))
    keys = mining._exact_topk(torch.tensor([[-2.0, -1.0, -3.0, 5.0, -1.0]]), 3)
    assert sorted(keys[0].tolist()) == [1, 3, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 41}, "k must be"),
        ({"k": 0}, "k must be"),
        ({"exclude": np.zeros(5, dtype=np.int64)}, "exclude"),
        ({"exclude": np.full(23, 41)}, "exclude"),
        ({"query": np.full((23, 3), np.nan, dtype=np.float32)}, "NaN"),
        ({"reference": np.ones((41, 4), dtype=np.float32)}, "dimension"),
        ({"query": np.ones(3, dtype=np.float32)}, "query embeddings"),
        ({"method": "faiss"}, "method"),
    ],
)
def test_bad_input_is_a_value_error(kwargs, message):
    rng = np.random.default_rng(2)
    args = {"query": tied_embeddings(rng, 23), "reference": tied_embeddings(rng, 41), "k": 5,
            "exclude": np.full(23, -1), "method": "torch"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        similar_references(args["query"], args["reference"], args["k"], args["exclude"],
                           device="cpu", method=args["method"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_path_equals_dense_argsort():
    rng = np.random.default_rng(7)
    q, r = tied_embeddings(rng, 300), tied_embeddings(rng, 500)
    exclude = rng.integers(-1, 500, size=300)
    got = similar_references(q, r, 25, exclude, device="cuda", block=(64, 128))
    np.testing.assert_array_equal(got, dense_neighbours(q, r, 25, exclude))
