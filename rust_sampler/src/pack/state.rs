//! The walk's per-epoch state: batch membership, the unused pairs of each class, and the
//! anchor classes' neighbour lists with the classes they pulled in removed.

use super::{Neighbours, SplitMix64};

const NONE: u32 = u32::MAX;

/// The unused pairs of each class in pair-index order (the reference's `idx2pair_pool`):
/// CSR over pairs, with a count of unused pairs and a cursor past the leading used ones.
struct ClassPairs {
    start: Vec<u32>,
    pairs: Vec<u32>,
    first: Vec<u32>,
    left: Vec<u32>,
}

impl ClassPairs {
    fn new(pair_class: &[i64], n_classes: usize) -> Self {
        let mut start = vec![0u32; n_classes + 1];
        for &c in pair_class {
            start[c as usize + 1] += 1;
        }
        let left: Vec<u32> = start[1..].to_vec();
        for c in 0..n_classes {
            start[c + 1] += start[c];
        }
        let mut first = start[..n_classes].to_vec();
        let mut pairs = vec![0u32; pair_class.len()];
        for (q, &c) in pair_class.iter().enumerate() {
            pairs[first[c as usize] as usize] = q as u32;
            first[c as usize] += 1;
        }
        first.copy_from_slice(&start[..n_classes]);
        ClassPairs {
            start,
            pairs,
            first,
            left,
        }
    }

    /// The k-th (from 0, k < left[c]) unused pair of class c in pair order. O(pairs of c).
    fn kth_unused(&mut self, c: usize, mut k: usize, used: &[bool]) -> usize {
        let mut i = self.first[c] as usize;
        while used[self.pairs[i] as usize] {
            i += 1;
        }
        self.first[c] = i as u32;
        loop {
            debug_assert!(i < self.start[c + 1] as usize);
            let q = self.pairs[i] as usize;
            if !used[q] {
                if k == 0 {
                    return q;
                }
                k -= 1;
            }
            i += 1;
        }
    }
}

/// Batch membership and the output.
pub(super) struct State {
    pub used: Vec<bool>,
    /// stamp[c] == batch_id  <=>  class c is in the current batch (O(1), never cleared).
    stamp: Vec<u32>,
    batch_id: u32,
    batch: Vec<i64>,
    batch_via: usize,
    pub out: Vec<i64>,
    pub via_neighbour: usize,
    batch_size: usize,
    pairs: ClassPairs,
}

impl State {
    pub fn new(pair_class: &[i64], n_classes: usize, batch_size: usize) -> Self {
        State {
            used: vec![false; pair_class.len()],
            stamp: vec![u32::MAX; n_classes],
            batch_id: 0,
            batch: Vec::with_capacity(batch_size),
            batch_via: 0,
            out: Vec::with_capacity(pair_class.len()),
            via_neighbour: 0,
            batch_size,
            pairs: ClassPairs::new(pair_class, n_classes),
        }
    }

    #[inline]
    pub fn in_batch(&self, c: usize) -> bool {
        self.stamp[c] == self.batch_id
    }

    /// Put pair q (class c) into the current batch; true when that closed the batch.
    #[inline]
    pub fn add(&mut self, q: usize, c: usize, via: bool) -> bool {
        self.used[q] = true;
        self.pairs.left[c] -= 1;
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
}

/// The neighbour lists as the epoch has changed them. Rows are never copied: each class
/// keeps a log of the class ids removed from its list (a chain through `removed`), replayed
/// when the class anchors again; most classes anchor once and have no log.
pub(super) struct Lists<'a> {
    nb: Neighbours<'a>,
    half: usize,
    /// Entries of the current list an anchor draws from (usize::MAX: all).
    range: usize,
    head: Vec<u32>,
    /// (removed class id, next link of the same class's chain).
    removed: Vec<(u32, u32)>,
    /// Per class id, removals still to apply while a list is rebuilt; all zero between uses.
    pending: Vec<u32>,
    /// The current list of the anchor class; then its fixed half and random draw in front.
    pool: Vec<u32>,
}

impl<'a> Lists<'a> {
    pub fn new(nb: Neighbours<'a>, half: usize, range: usize) -> Self {
        Lists {
            nb,
            half,
            range,
            head: vec![NONE; nb.rows],
            removed: Vec::new(),
            pending: Vec::new(),
            pool: Vec::with_capacity(nb.width),
        }
    }

    /// Class c's list now: its row without padding and, for each class id removed k times,
    /// without that id's first k occurrences (= removing first occurrences one at a time,
    /// as the reference's `list.remove` does).
    fn current(&mut self, c: usize) {
        let row = &self.nb.data[c * self.nb.width..(c + 1) * self.nb.width];
        self.pool.clear();
        if self.head[c] == NONE {
            // The walk's hot loop (one row per anchor): a vectorised convert, then dropping
            // the padding (-1 -> u32::MAX, never a class id: the check caps the rows).
            self.pool.extend(row.iter().map(|&x| x as u32));
            self.pool.retain(|&x| x != u32::MAX);
            return;
        }
        if self.pending.is_empty() {
            self.pending = vec![0; self.nb.rows];
        }
        let mut link = self.head[c];
        while link != NONE {
            let (x, next) = self.removed[link as usize];
            self.pending[x as usize] += 1;
            link = next;
        }
        for &x in row.iter().filter(|&&x| x >= 0) {
            let n = &mut self.pending[x as usize];
            if *n > 0 {
                *n -= 1;
            } else {
                self.pool.push(x as u32);
            }
        }
    }

    /// Step 3 of the module docs for anchor class c (its pair already in the batch).
    pub fn pull_neighbours(&mut self, c: usize, st: &mut State, rng: &mut SplitMix64) {
        self.current(c);
        self.pool.truncate(self.range);
        let n_fixed = self.half.min(self.pool.len());
        let n_random = self.half.min(self.pool.len() - n_fixed);
        // Partial Fisher–Yates of the rest: pool[n_fixed..n_fixed + n_random] is the draw.
        for t in n_fixed..n_fixed + n_random {
            let j = t + rng.below((self.pool.len() - t) as u64) as usize;
            self.pool.swap(t, j);
        }
        // Only a class with an unused pair left can anchor again and see its list again.
        let log = st.pairs.left[c] > 0;
        for i in 0..n_fixed + n_random {
            let nc = self.pool[i] as usize;
            let left = st.pairs.left[nc] as usize;
            if left == 0 || st.in_batch(nc) {
                continue;
            }
            let k = if left > 1 {
                rng.below(left as u64) as usize
            } else {
                0
            };
            let q = st.pairs.kth_unused(nc, k, &st.used);
            if log {
                self.removed.push((nc as u32, self.head[c]));
                self.head[c] = (self.removed.len() - 1) as u32;
            }
            if st.add(q, nc, true) {
                return;
            }
        }
    }
}
