//! Greedy hard-negative batch packing (Sample4Geo), seeded and sequential.
//!
//! Shuffle the pairs; walk them as a queue. An unused pair whose class is not yet in the
//! current batch joins it as an anchor; then the anchor's class neighbour list is tried (the
//! first half of `neighbour_select` in order, the second half drawn at random from the rest
//! of the list), adding one unused pair of each neighbour class not yet in the batch. A
//! batch closes at `batch_size` pairs; the incomplete tail is dropped. A pair whose class is
//! already in the batch goes back to the end of the queue; the walk stops after
//! `MAX_RETURNS` consecutive returns (as the reference does) or when a full cycle of the
//! queue changed nothing. The walk runs on one thread (only the input check uses several),
//! so the result depends on the inputs and seed alone.

use rayon::prelude::*;

use crate::error::{bail, SamplerError};

/// The reference implementation gives up after this many consecutive re-queued pairs.
pub const MAX_RETURNS: usize = 1024;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, statistically solid, fully portable.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in [0, n) without modulo bias (Lemire 2019); n > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Fisher–Yates, last position first.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Class neighbour lists: `data` is (rows × width) row-major, -1 = padding.
#[derive(Clone, Copy, Debug)]
pub struct Neighbours<'a> {
    pub data: &'a [i64],
    pub rows: usize,
    pub width: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// (n_batches × batch_size) pair indices, row-major.
    pub batches: Vec<i64>,
    pub n_batches: usize,
    /// Pairs not in any batch (incomplete tail, or left when the walk gave up).
    pub dropped: usize,
    /// Pairs that entered a (full) batch through their anchor's neighbour list.
    pub via_neighbour: usize,
}

/// Number of classes and a check of every id; the message names the argument and row.
fn check(
    pair_class: &[i64],
    nb: Option<Neighbours>,
    batch_size: usize,
) -> Result<usize, SamplerError> {
    if batch_size < 2 {
        bail!("batch_size must be at least 2, got {batch_size}");
    }
    if pair_class.len() >= u32::MAX as usize {
        bail!(
            "at most {} pairs are supported, got {}",
            u32::MAX - 1,
            pair_class.len()
        );
    }
    if let Some(nb) = nb {
        if nb.data.len() != nb.rows * nb.width {
            bail!(
                "neighbours holds {} values, not rows*width = {}",
                nb.data.len(),
                nb.rows * nb.width
            );
        }
        let bad = |c: i64| c < -1 || c >= nb.rows as i64;
        // A branch-free pass (vectorised, over threads) first: this scan is most of the cost
        // of packing; the exact first offender is looked up only when there is one.
        let any_bad = nb
            .data
            .par_chunks(1 << 16)
            .any(|chunk| chunk.iter().fold(false, |acc, &c| acc | bad(c)));
        if let Some(p) = any_bad
            .then(|| nb.data.iter().position(|&c| bad(c)))
            .flatten()
        {
            let (r, col) = (p / nb.width, p % nb.width);
            bail!(
                "neighbours[{r}, {col}] = {} is not a class id in [0, {}) or -1 (padding)",
                nb.data[p],
                nb.rows
            );
        }
    }
    let n_classes = match nb {
        Some(nb) => nb.rows,
        None => pair_class
            .iter()
            .max()
            .map_or(0, |&m| (m.max(-1) + 1) as usize),
    };
    if let Some(i) = pair_class
        .iter()
        .position(|&c| c < 0 || c >= n_classes as i64)
    {
        bail!(
            "pair_class[{i}] = {} is not a class id in [0, {n_classes}){}",
            pair_class[i],
            if nb.is_some() {
                " (neighbours has one row per class)"
            } else {
                ""
            }
        );
    }
    let mut seen = vec![false; n_classes];
    let mut distinct = 0;
    for &c in pair_class {
        if !std::mem::replace(&mut seen[c as usize], true) {
            distinct += 1;
        }
    }
    if batch_size > distinct {
        bail!("batch_size ({batch_size}) is larger than the number of classes with pairs ({distinct})");
    }
    Ok(n_classes)
}

/// Class ids renumbered 0.. in increasing order (negative ids kept, for the error message).
fn compact_ids(pair_class: &[i64]) -> Vec<i64> {
    let mut ids: Vec<i64> = pair_class.iter().copied().filter(|&c| c >= 0).collect();
    ids.sort_unstable();
    ids.dedup();
    let rank = |c: i64| ids.binary_search(&c).map_or(c, |r| r as i64);
    pair_class
        .iter()
        .map(|&c| if c < 0 { c } else { rank(c) })
        .collect()
}

/// Pack pairs into full batches with no class twice per batch; see the module docs.
///
/// `pair_class`: (P,) class id of each pair. `neighbours`: per class, the hardest other
/// classes first, or None for class-unique random batches. Returns the batches and counts.
pub fn pack_batches(
    pair_class: &[i64],
    neighbours: Option<Neighbours>,
    batch_size: usize,
    neighbour_select: usize,
    seed: u64,
) -> Result<Packed, SamplerError> {
    let compacted: Vec<i64>;
    let pair_class = match neighbours {
        // Without neighbour lists only distinctness matters; sparse ids (say 10^12) must not
        // size the per-class tables.
        None if pair_class
            .iter()
            .any(|&c| c > 2 * pair_class.len() as i64 + 1024) =>
        {
            compacted = compact_ids(pair_class);
            &compacted[..]
        }
        _ => pair_class,
    };
    let n_classes = check(pair_class, neighbours, batch_size)?;
    let p = pair_class.len();
    let mut rng = SplitMix64::new(seed);
    let mut queue: Vec<u32> = (0..p as u32).collect();
    rng.shuffle(&mut queue);

    // Pairs of each class in shuffled order (CSR), so "an unused pair of class c" is random.
    let mut start = vec![0u32; n_classes + 1];
    for &c in pair_class {
        start[c as usize + 1] += 1;
    }
    for c in 0..n_classes {
        start[c + 1] += start[c];
    }
    let mut cursor: Vec<u32> = start[..n_classes].to_vec();
    let mut by_class = vec![0u32; p];
    for &q in &queue {
        let c = pair_class[q as usize] as usize;
        by_class[cursor[c] as usize] = q;
        cursor[c] += 1;
    }
    cursor.copy_from_slice(&start[..n_classes]);

    let mut st = State {
        used: vec![false; p],
        stamp: vec![u32::MAX; n_classes],
        batch_id: 0,
        batch: Vec::with_capacity(batch_size),
        batch_via: 0,
        out: Vec::with_capacity(p),
        via_neighbour: 0,
        batch_size,
    };
    let mut pool: Vec<i64> = Vec::new();

    // Ring buffer walk: each unused pair sits in the queue at most once, so P slots suffice.
    let (mut head, mut len, mut returns) = (0usize, p, 0usize);
    while len > 0 && returns < MAX_RETURNS && returns < len {
        let q = queue[head] as usize;
        head = (head + 1) % p.max(1);
        len -= 1;
        if st.used[q] {
            continue;
        }
        let c = pair_class[q] as usize;
        if st.stamp[c] == st.batch_id {
            queue[(head + len) % p] = q as u32;
            len += 1;
            returns += 1;
            continue;
        }
        returns = 0;
        if st.add(q, c, false) {
            continue;
        }
        if let Some(nb) = neighbours.filter(|_| neighbour_select > 0) {
            let row = &nb.data[c * nb.width..(c + 1) * nb.width];
            st.add_neighbours(
                row,
                neighbour_select,
                &mut rng,
                &mut pool,
                pair_class,
                &by_class,
                &start,
                &mut cursor,
            );
        }
    }
    let n_batches = st.out.len() / batch_size;
    Ok(Packed {
        dropped: p - st.out.len(),
        batches: st.out,
        n_batches,
        via_neighbour: st.via_neighbour,
    })
}

struct State {
    used: Vec<bool>,
    /// stamp[c] == batch_id  <=>  class c is in the current batch (O(1), never cleared).
    stamp: Vec<u32>,
    batch_id: u32,
    batch: Vec<i64>,
    batch_via: usize,
    out: Vec<i64>,
    via_neighbour: usize,
    batch_size: usize,
}

impl State {
    /// Put pair q (class c) into the current batch; true when that closed the batch.
    #[inline]
    fn add(&mut self, q: usize, c: usize, via: bool) -> bool {
        self.used[q] = true;
        self.stamp[c] = self.batch_id;
        self.batch.push(q as i64);
        self.batch_via += via as usize;
        if self.batch.len() < self.batch_size {
            return false;
        }
        self.out.extend_from_slice(&self.batch);
        self.via_neighbour += self.batch_via;
        self.batch.clear();
        self.batch_via = 0;
        self.batch_id += 1;
        true
    }

    /// Try the anchor's neighbour classes: the first half of `select` in list order, the
    /// rest drawn at random from the remainder of the list (padding skipped).
    #[allow(clippy::too_many_arguments)]
    fn add_neighbours(
        &mut self,
        row: &[i64],
        select: usize,
        rng: &mut SplitMix64,
        pool: &mut Vec<i64>,
        pair_class: &[i64],
        by_class: &[u32],
        start: &[u32],
        cursor: &mut [u32],
    ) {
        let fixed = select / 2;
        pool.clear();
        pool.extend(row.iter().copied().filter(|&c| c >= 0));
        let n_fixed = fixed.min(pool.len());
        let n_random = (select - fixed).min(pool.len() - n_fixed);
        // Partial Fisher–Yates of the remainder: pool[n_fixed..n_fixed + n_random] is the draw.
        for t in n_fixed..n_fixed + n_random {
            let j = t + rng.below((pool.len() - t) as u64) as usize;
            pool.swap(t, j);
        }
        for &nc in &pool[..n_fixed + n_random] {
            let nc = nc as usize;
            if self.stamp[nc] == self.batch_id {
                continue;
            }
            // Advance past pairs of this class already used (by the walk or earlier picks).
            let end = start[nc + 1];
            while cursor[nc] < end && self.used[by_class[cursor[nc] as usize] as usize] {
                cursor[nc] += 1;
            }
            if cursor[nc] == end {
                continue;
            }
            let q = by_class[cursor[nc] as usize] as usize;
            debug_assert_eq!(pair_class[q] as usize, nc);
            if self.add(q, nc, true) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
