"""pack_batches: identical to the plain-Python reference, invariants, determinism, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4g.errors import UserInputError
from s4g.sampling import pack_batches

from reference import check_packing, pack_reference


def world(seed: int, pairs: int, classes: int, width: int, pad: float = 0.1):
    """Pairs over classes (every class has a pair, some several) and padded neighbour lists."""
    rng = np.random.default_rng(seed)
    pair_class = np.concatenate([np.arange(classes), rng.integers(0, classes, pairs - classes)])
    nb = rng.integers(0, classes, (classes, width))
    nb[rng.random((classes, width)) < pad] = -1
    return pair_class, nb


@st.composite
def cases(draw):
    classes = draw(st.integers(2, 60))
    pairs = classes + draw(st.integers(0, 80))
    width = draw(st.integers(1, 20))
    pair_class, nb = world(draw(st.integers(0, 2**32 - 1)), pairs, classes, width)
    if draw(st.booleans()):
        nb = None
    batch = draw(st.integers(2, classes))
    return pair_class, nb, batch, draw(st.integers(0, 30)), draw(st.integers(0, 2**64 - 1))


@settings(max_examples=120, deadline=None)
@given(cases())
def test_equals_reference_and_keeps_invariants(case):
    pair_class, nb, batch, select, seed = case
    got, stats = pack_batches(pair_class, nb, batch, select, seed, return_stats=True)
    want, dropped, via = pack_reference(pair_class, nb, batch, select, seed)
    check_packing(got, pair_class, batch)
    np.testing.assert_array_equal(got, want)
    assert stats == {"dropped": dropped, "via_neighbour": via}
    assert stats["dropped"] == len(pair_class) - got.size


def test_vigor_like_places_nearly_all_pairs():
    # ~1.5 pairs per class, as VIGOR's tiles: >99% placed, most via neighbour lists
    pair_class, nb = world(1, 3000, 2000, 128, pad=0.0)
    batches, stats = pack_batches(pair_class, nb, 64, 64, seed=3, return_stats=True)
    check_packing(batches, pair_class, 64)
    assert stats["dropped"] < 0.01 * len(pair_class) + 64
    assert stats["via_neighbour"] > 0.5 * batches.size


def test_seed_changes_order_and_none_gives_random_batches():
    pair_class = np.arange(500)
    a = pack_batches(pair_class, None, 50, seed=1)
    b = pack_batches(pair_class, None, 50, seed=2)
    assert a.shape == b.shape == (10, 50)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(np.sort(a.ravel()), np.arange(500))


def test_same_result_on_any_thread_count(tmp_path):
    # The packing runs on one thread (no rayon in pack.rs); check it end to end anyway.
    code = (
        "import numpy as np, hashlib\n"
        "from s4g.sampling import pack_batches\n"
        "rng = np.random.default_rng(0)\n"
        "c = rng.integers(0, 400, 900); c[:400] = np.arange(400)\n"
        "nb = rng.integers(-1, 400, (400, 32))\n"
        "print(hashlib.sha256(pack_batches(c, nb, 32, 16, 9).tobytes()).hexdigest())\n"
    )
    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads}
        cmd = [sys.executable, "-c", code]
        # cwd away from the checkout: `python -c` puts cwd first on sys.path, and the source
        # folder s4g/ there has no compiled extension when s4g is installed as a wheel.
        out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_empty_result_shape():
    # two classes, batch of two, one pair each: exactly one batch; with three pairs, one dropped
    out, stats = pack_batches([0, 1, 1], None, 2, return_stats=True)
    assert out.shape == (1, 2) and stats["dropped"] == 1


@pytest.mark.parametrize(
    ("pair_class", "nb", "batch", "select", "message"),
    [
        ([0, 1, -1], None, 2, 4, "pair_class[2] = -1"),
        ([0, 1, 3], [[1], [0], [0]], 2, 4, "pair_class[2] = 3"),
        ([0, 1, 2], [[1], [5], [0]], 2, 4, "neighbours[1, 0] = 5"),
        ([0, 1, 2], [[1], [-2], [0]], 2, 4, "neighbours[1, 0] = -2"),
        ([0, 1, 2], None, 1, 4, "batch_size must be at least 2"),
        ([0, 1, 2], None, 4, 4, "larger than the number of classes with pairs (3)"),
        ([0, 0, 0], None, 2, 4, "number of classes with pairs (1)"),
        ([0, 1, 2], None, 2, -1, "neighbour_select must be at least 0"),
        ([0, 1.5, 2], None, 2, 4, "pair_class must hold integers"),
        ([[0, 1]], None, 2, 4, "pair_class must be 1-dimensional"),
        ([0, 1, 2], [0, 1, 2], 2, 4, "neighbours must be 2-dimensional"),
        ([0, 1, 2], None, 2.0, 4, "batch_size must be an integer"),
    ],
)
def test_bad_input(pair_class, nb, batch, select, message):
    with pytest.raises(UserInputError) as info:
        pack_batches(pair_class, nb, batch, select)
    assert message in str(info.value)
