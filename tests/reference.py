"""Slow, obviously-correct oracles the Rust sampler is tested against.

- `haversine_m` repeats the library's distance definition operation for operation (its
  polynomial sine, and the `math` module = the platform libm, as Rust uses, for cos/asin),
  so exact ties and orderings can be compared bit for bit; `haversine_np` is an independent
  textbook formula for a tolerance check of the definition itself.
- `knn_bruteforce`: every pairwise distance, stable sort by (distance, index).
- `pack_reference`: Sample4Geo's packing loop re-written plainly, its random choices drawn
  from the library's SplitMix64 stream in the library's order, so the batches must be
  identical; `check_packing`: the invariants alone.
- `topk_dense`: top-k from a full stable argsort.
"""

from __future__ import annotations

import math

import numpy as np

EARTH_RADIUS_M = 6_371_008.8
MASK64 = (1 << 64) - 1
MAX_FAILED_POPS = 1024


# (-1)^m / (2m+1)! for m = 10 .. 1, the literals of geo.rs
SIN_COEFFS = [
    1.9572941063391263e-20, -8.22063524662433e-18, 2.8114572543455206e-15, -7.647163731819816e-13,
    1.6059043836821613e-10, -2.505210838544172e-08, 2.7557319223985893e-06, -0.0001984126984126984,
    0.008333333333333333, -0.16666666666666666,
]


def sin_half_angle(x: float) -> float:
    """geo.rs's sin for |x| <= pi/2: Taylor series to x^21 by Horner's rule."""
    x2 = x * x
    p = SIN_COEFFS[0]
    for c in SIN_COEFFS[1:]:
        p = p * x2 + c
    return x + x * (x2 * p)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine metres exactly as geo.rs computes them (differences in degrees first)."""
    dlon = lon2 - lon1
    if dlon > 180.0:
        dlon -= 360.0
    elif dlon < -180.0:
        dlon += 360.0
    half = math.pi / 360.0
    cos1 = math.cos(lat1 * (math.pi / 180.0))
    cos2 = math.cos(lat2 * (math.pi / 180.0))
    s_lat = sin_half_angle((lat2 - lat1) * half)
    s_lon = sin_half_angle(dlon * half)
    a = min(s_lat * s_lat + cos1 * cos2 * (s_lon * s_lon), 1.0)
    half_angle = math.asin(math.sqrt(a)) if a <= 0.5 else math.atan2(math.sqrt(a), math.sqrt(1.0 - a))
    return 2.0 * EARTH_RADIUS_M * half_angle


def haversine_np(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Textbook haversine on radians with numpy (independent of the definition above)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2) - np.radians(lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def knn_bruteforce(lat, lon, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) indices and metres of the k nearest other points, ties by lower index."""
    lat, lon = [float(x) for x in lat], [float(x) for x in lon]
    n = len(lat)
    dist = np.array([[haversine_m(lat[i], lon[i], lat[j], lon[j]) for j in range(n)] for i in range(n)])
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(dist, order, axis=1)


class SplitMix64:
    """The packing RNG (pack.rs), bit for bit."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        m = self.next_u64() * n
        if (m & MASK64) < n:
            threshold = ((1 << 64) - n) % n
            while (m & MASK64) < threshold:
                m = self.next_u64() * n
        return m >> 64

    def shuffle(self, v: list) -> None:
        for i in range(len(v) - 1, 0, -1):
            j = self.below(i + 1)
            v[i], v[j] = v[j], v[i]


class ReferenceDraws:
    """The reference's three random choices, drawn from s4g's SplitMix64 stream in s4g's order.

    Each replaces a `random.shuffle` of the reference by a draw with the same distribution;
    the calls come in the reference's order (queue; per anchor, its random half before any
    pull; per pulled class, its pair), which is the order the Rust walk draws in.
    - `shuffle_queue`: `random.shuffle(pair_pool)`, by a full Fisher–Yates (last position
      first): both give a uniform permutation.
    - `sample_rest(rest, k)`: `random.shuffle(near_random); near_random[:k]` (k = min(split,
      len(rest))), by a partial Fisher–Yates of the first k slots (slot t swapped with a
      uniform slot in t..): both give a uniform ordered sample of k without replacement.
    - `pick_pair(near_pairs)`: the head of `random.shuffle(near_pairs)`, by
      `near_pairs[below(n)]` over the class's unused pairs in pair order (no draw when n == 1):
      both give a uniform one of them.
    Python's own draws would differ, so these make "same queue → same batches" checkable.
    """

    def __init__(self, seed: int) -> None:
        self.rng = SplitMix64(seed)

    def shuffle_queue(self, pool: list) -> None:
        self.rng.shuffle(pool)

    def sample_rest(self, rest: list, k: int) -> list:
        rest = list(rest)
        for t in range(k):
            j = t + self.rng.below(len(rest) - t)
            rest[t], rest[j] = rest[j], rest[t]
        return rest[:k]

    def pick_pair(self, near_pairs: list):
        return near_pairs[self.rng.below(len(near_pairs))] if len(near_pairs) > 1 else near_pairs[0]


def pack_reference(pair_class, neighbours, batch_size: int, neighbour_select: int = 64, seed: int = 0,
                   max_failed_pops: int = MAX_FAILED_POPS, neighbour_range: int | None = None):
    """Sample4Geo's `VigorDatasetTrain.shuffle`, re-written plainly, with ReferenceDraws.

    (Its CVUSA/CVACT copies are the same loop with one pair per class, where the removal
    never matters; CVUSA's also never pulls class id 0, an accident not repeated here.)

    Same shape as the reference: a list queue popped from the front, sets for the batch's
    classes and the epoch's used pairs, a per-epoch copy of the neighbour lists from which
    each pulled-in class is removed (`list.remove`: first occurrence), and the break counter
    as the reference counts it (every pop that adds no pair: put back or already used;
    stop at max_failed_pops: 1024 there, 512 in its University-1652 loop). A pair is its index;
    its class is pair_class[pair]. The lists are the whole rows without -1 padding;
    neighbour_range None leaves the reference's `similarity_pool[idx][:neighbour_range]` slice to
    the caller (s4g's order), an int takes it here, on the list as it stands at each anchor (the
    reference's order). Returns (batches (n, batch_size) int64, dropped, via_neighbour), where
    via_neighbour counts the pairs of full batches that a neighbour list pulled in.
    """
    pair_class = [int(c) for c in pair_class]
    draws = ReferenceDraws(seed)
    idx2pair_pool: dict[int, list[int]] = {}
    for pair, idx in enumerate(pair_class):
        idx2pair_pool.setdefault(idx, []).append(pair)
    similarity_pool = None
    if neighbours is not None:
        similarity_pool = [[int(c) for c in row if c >= 0] for row in neighbours]
    split = neighbour_select // 2

    pair_pool = list(range(len(pair_class)))
    draws.shuffle_queue(pair_pool)
    pairs_epoch: set[int] = set()
    idx_batch: set[int] = set()
    batches, current_batch, pulled = [], [], set()
    break_counter = 0
    while pair_pool:
        pair = pair_pool.pop(0)
        idx = pair_class[pair]
        if idx not in idx_batch and pair not in pairs_epoch:
            idx_batch.add(idx)
            current_batch.append(pair)
            pairs_epoch.add(pair)
            idx2pair_pool[idx].remove(pair)
            if similarity_pool is not None and len(current_batch) < batch_size:
                near = list(similarity_pool[idx])
                if neighbour_range is not None:
                    near = near[:neighbour_range]
                rest = near[split:]
                for idx_near in near[:split] + draws.sample_rest(rest, min(split, len(rest))):
                    if len(current_batch) >= batch_size:
                        break
                    if idx_near not in idx_batch and idx2pair_pool.get(idx_near):
                        near_pair = draws.pick_pair(idx2pair_pool[idx_near])
                        idx_batch.add(idx_near)
                        current_batch.append(near_pair)
                        pairs_epoch.add(near_pair)
                        pulled.add(near_pair)
                        idx2pair_pool[idx_near].remove(near_pair)
                        similarity_pool[idx].remove(idx_near)
            break_counter = 0
        else:
            if pair not in pairs_epoch:
                pair_pool.append(pair)
            break_counter += 1
        if break_counter >= max_failed_pops:
            break
        if len(current_batch) >= batch_size:
            batches.append(current_batch)
            idx_batch, current_batch = set(), []
    placed = np.array(batches, dtype=np.int64).reshape(-1, batch_size)
    via = sum(pair in pulled for pair in placed.ravel().tolist())
    return placed, len(pair_class) - placed.size, via


def released_gps_lists(lat, lon, k: int) -> np.ndarray:
    """`calc_distance_*.py` re-written plainly: scikit-learn's haversine formula (the
    `math` module = the C library it calls) on (lat, lon) as given, in degrees; the whole
    N×N matrix; its diagonal filled with its maximum; torch.topk(k, largest=False) per row."""
    import torch

    pts = [(float(a), float(b)) for a, b in zip(lat, lon)]
    dm = np.empty((len(pts), len(pts)))
    for i, (a1, b1) in enumerate(pts):
        for j, (a2, b2) in enumerate(pts):
            s0 = math.sin(0.5 * (a1 - a2))
            s1 = math.sin(0.5 * (b1 - b2))
            dm[i, j] = 2 * math.asin(math.sqrt(s0 * s0 + math.cos(a1) * math.cos(a2) * s1 * s1))
    t = torch.from_numpy(dm).fill_diagonal_(dm.max())
    return torch.topk(t, k=k, dim=1, largest=False).indices.numpy()


def released_tile_queries(query_emb, pair_class, reference_emb) -> np.ndarray:
    """VIGOR's `calculate_nearest` choice of a tile's query: a dict filled pair by pair, so a
    tile keeps its last panorama's embedding; tiles without a pair keep their own."""
    chosen = {}
    for row, c in enumerate(pair_class):
        chosen[int(c)] = query_emb[row]
    return np.stack([chosen.get(c, reference_emb[c]) for c in range(len(reference_emb))]).astype(np.float32)


def check_packing(batches: np.ndarray, pair_class, batch_size: int) -> None:
    """Assert the packing invariants: shape, each pair at most once, classes unique per batch."""
    pair_class = np.asarray(pair_class)
    assert batches.dtype == np.int64 and batches.ndim == 2 and batches.shape[1] == batch_size
    flat = batches.ravel()
    assert np.all((flat >= 0) & (flat < len(pair_class)))
    assert len(np.unique(flat)) == flat.size, "a pair appears twice"
    for row in batches:
        assert len(set(pair_class[row].tolist())) == batch_size, "a class appears twice in a batch"


def topk_dense(scores: np.ndarray, k: int, exclude) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row from a stable argsort of -scores (ties: lower column first), -1/-inf padded."""
    q, r = scores.shape
    idx = np.full((q, k), -1, dtype=np.int64)
    val = np.full((q, k), -np.inf, dtype=np.float32)
    for i in range(q):
        order = np.argsort(-scores[i], kind="stable")
        order = order[order != exclude[i]][:k]
        idx[i, : len(order)] = order
        val[i, : len(order)] = scores[i, order]
    return idx, val


# ---------------------------------------------------------------------------------------
# Retrieval-metric protocols (oracles for s4g.retrieval.evaluate.retrieval_metrics).
#
# Each follows the shape of the evaluation code behind the published numbers: one query at
# a time, on that query's full row of scores. Written here from the definitions, not copied.
# ---------------------------------------------------------------------------------------


def sample4geo_protocol(scores: np.ndarray, query_labels, reference_labels, semi=None,
                        ks=(1, 5, 10)) -> dict[str, float]:
    """Sample4Geo's CVUSA / CVACT / VIGOR evaluation on a dense (Q, R) score matrix, percent.

    Per query: gt = the positive's score, ranking = number of references with score > gt;
    R@k counts ranking < k and R@1% counts ranking < R // 100. Hit rate (semi: (Q, S) labels,
    -1 padded): drop the semi-positives from the references scoring > gt; a hit when none is
    left. Sample4Geo's queries have one positive; with several, gt is the best positive's
    score (s4g's extension; no positive scores above it, so counting every reference is the
    same as counting non-positives). Semi-positives are all references with a listed label;
    a listed label equal to the query's own marks positives, which never score above gt.
    """
    query_labels, reference_labels = np.asarray(query_labels), np.asarray(reference_labels)
    n_q, n_ref = scores.shape
    thresholds = [*ks, n_ref // 100]
    counted = np.zeros(len(thresholds))
    hits = 0
    for i in range(n_q):
        row = scores[i]
        gt = row[reference_labels == query_labels[i]].max()
        higher = row > gt
        ranking = int(higher.sum())
        for j, k in enumerate(thresholds):
            if ranking < k:
                counted[j] += 1
        if semi is not None:
            keep = np.ones(n_ref)
            for label in semi[i]:
                if label != -1:
                    keep[reference_labels == label] = 0
            hits += (higher * keep).sum() < 1
    out = {f"R@{k}": 100 * counted[j] / n_q for j, k in enumerate(ks)}
    out["R@1%"] = 100 * counted[-1] / n_q
    if semi is not None:
        out["hit_rate"] = 100 * hits / n_q
    return out


def university1652_protocol(scores: np.ndarray, query_labels, reference_labels,
                            ks=(1, 5, 10)) -> dict[str, float]:
    """University-1652's evaluation (evaluate / compute_mAP) on a dense (Q, R) matrix, percent.

    Per query: order the gallery by descending score; the positions of the positives in that
    order are rows_good; cmc[rows_good[0]:] = 1; AP sums, over the i-th positive,
    ((i / rows_good[i], or 1 when it is 0) + (i + 1) / (rows_good[i] + 1)) / 2 / n_positives.
    Averaged over queries: R@k = CMC[k - 1], R@1% = CMC[round(R * 0.01)], AP. The reference
    orders equal scores as np.argsort happens to; here ties put positives first, then lower
    index (s4g's stated rule). k > R, where the reference would fail, reads CMC[R - 1] (= 1).
    The reference's junk (gallery label -1, dropped from the ranking) has no counterpart in
    s4g and is not modelled: every reference is ranked.
    """
    query_labels, reference_labels = np.asarray(query_labels), np.asarray(reference_labels)
    n_q, n_ref = scores.shape
    cmc = np.zeros(n_ref)
    ap_sum = 0.0
    for i in range(n_q):
        row = scores[i]
        good = reference_labels == query_labels[i]
        index = np.lexsort((np.arange(n_ref), ~good, -row))  # last key sorts first
        rows_good = np.flatnonzero(good[index])
        query_cmc = np.zeros(n_ref)
        query_cmc[rows_good[0]:] = 1
        cmc += query_cmc
        ap = 0.0
        for j, at in enumerate(rows_good):
            old_precision = 1.0 if at == 0 else j / at
            ap += (old_precision + (j + 1) / (at + 1)) / 2 / len(rows_good)
        ap_sum += ap
    cmc /= n_q
    out = {f"R@{k}": 100 * cmc[min(k, n_ref) - 1] for k in ks}
    out["R@1%"] = 100 * cmc[round(n_ref * 0.01)]
    out["AP"] = 100 * ap_sum / n_q
    return out
