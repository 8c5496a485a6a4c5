"""pack_batches: identical to the re-written reference loop, its rule case by case, invariants, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import MAX_FAILED_POPS, ReferenceDraws, check_packing, pack_reference

from s4g.errors import UserInputError
from s4g.sampling import pack_batches


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
    patience = draw(st.sampled_from([1, 2, 5, 40, 512, 1024]))  # 512: University-1652's loop
    return pair_class, nb, batch, draw(st.integers(0, 30)), draw(st.integers(0, 2**64 - 1)), patience


@settings(max_examples=120, deadline=None)
@given(cases())
def test_equals_reference_and_keeps_invariants(case):
    pair_class, nb, batch, select, seed, patience = case
    got, stats = pack_batches(pair_class, nb, batch, select, seed, max_failed_pops=patience, return_stats=True)
    want, dropped, via = pack_reference(pair_class, nb, batch, select, seed, max_failed_pops=patience)
    check_packing(got, pair_class, batch)
    np.testing.assert_array_equal(got, want)
    assert stats == {"dropped": dropped, "via_neighbour": via}
    assert stats["dropped"] == len(pair_class) - got.size


def queue_order(n_pairs: int, seed: int) -> list[int]:
    """The order in which the packing will first pop the pairs for this seed."""
    queue = list(range(n_pairs))
    ReferenceDraws(seed).shuffle_queue(queue)
    return queue


def same_as_reference(pair_class, nb, batch, select, seed):
    got, stats = pack_batches(pair_class, nb, batch, select, seed, return_stats=True)
    want, dropped, via = pack_reference(pair_class, nb, batch, select, seed)
    np.testing.assert_array_equal(got, want)
    assert stats == {"dropped": dropped, "via_neighbour": via}
    return got, stats


def test_second_anchoring_skips_the_classes_pulled_the_first_time():
    # A (pairs 0, 1) lists B (pairs 2, 3), C (4), D (5); E, F (6, 7) list nothing. Batches
    # of two, select 2: one fixed entry, one drawn from the rest. The queue starts 0, 1.
    pair_class = [0, 0, 1, 1, 2, 3, 4, 5]
    nb = np.full((6, 3), -1)
    nb[0] = [1, 2, 3]
    seed = next(s for s in itertools.count() if queue_order(8, s)[:2] == [0, 1])
    got, _ = same_as_reference(pair_class, nb, 2, 2, seed)
    # Pair 0 anchors and pulls a B pair (fixed half), which removes B from A's list; pair 1
    # anchors next and its fixed half is now C, which moved up from the random rest. (Reusing
    # the list would pull B's other pair.)
    assert got[0, 0] == 0 and got[0, 1] in (2, 3)
    assert got[1].tolist() == [1, 4]
    # Removal takes the first occurrence only: with B listed twice, B is still first.
    nb[0] = [1, 1, 2]
    got, _ = same_as_reference(pair_class, nb, 2, 2, seed)
    assert got[1].tolist() == [1, 5 - got[0, 1]]


def test_used_pairs_count_toward_the_failure_limit():
    # A group of 101 classes (one pair each) that list each other: the first member popped
    # pulls in the other 100. Z has 1000 pairs, W one pair; a batch takes all 103 classes.
    group, n_z = 101, 1000
    pair_class = np.r_[np.arange(group), np.full(n_z, group), group + 1]
    nb = np.full((group + 2, group - 1), -1)
    for c in range(group):
        nb[c] = np.delete(np.arange(group), c)
    w = len(pair_class) - 1

    def run_before_w(queue):
        last_anchor = max(min(queue.index(c) for c in range(group)), queue.index(group))
        return queue.index(w) - last_anchor - 1

    seed = 587  # the first seed whose queue has such a run (1040 pops); a search takes a second
    assert run_before_w(queue_order(len(pair_class), seed)) >= MAX_FAILED_POPS
    got, stats = same_as_reference(pair_class, nb, group + 2, 2 * group, seed)
    # Between the last anchor and w every pop fails: a used group pair (dropped) or another Z
    # pair (put back). Put-back pops alone stay below 1000 < MAX_FAILED_POPS, so counting only
    # those would reach w and fill the batch; counted as the reference counts, the walk stops.
    assert got.shape == (0, group + 2) and stats["dropped"] == len(pair_class)


@pytest.mark.parametrize(("select", "via"), [(0, 0), (1, 0), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_select_is_half_fixed_half_random_rounded_down(select, via):
    # Five classes of one pair, each listing all others; batches of four. The first anchor
    # pulls select // 2 fixed + select // 2 random classes (at most three fit); anchors, not
    # counted in via_neighbour, complete the batch. An odd select loses one, as in the reference.
    nb = [[(c + d) % 5 for d in range(1, 5)] for c in range(5)]
    for seed in range(20):
        got, stats = same_as_reference(range(5), nb, 4, select, seed)
        assert got.shape == (1, 4) and stats["via_neighbour"] == via


def test_pulled_pair_is_uniform_over_the_class_unused_pairs():
    # A (pair 0) lists B (pairs 1, 2); C (3) and D (4) list nothing. When A anchors first,
    # the B pair it pulls is either one (as the reference's shuffle of B's unused pairs), not
    # always the one the queue holds first: that one would leave the later pair for later.
    pair_class, nb = [0, 1, 1, 2, 3], [[1], [-1], [-1], [-1]]
    later = []
    for seed in range(1000):
        queue = queue_order(5, seed)
        if queue[0] == 0:
            got, _ = same_as_reference(pair_class, nb, 2, 2, seed)
            pulled = got[0, 1]
            later.append(queue.index(pulled) > queue.index(3 - pulled))
    assert len(later) > 150 and 0.4 < np.mean(later) < 0.6


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
