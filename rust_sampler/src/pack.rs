//! Greedy hard-negative batch packing for one epoch, seeded and sequential.
//!
//! The rule is Sample4Geo's (`VigorDatasetTrain.shuffle`), step for step:
//!
//! 1. Shuffle the pairs into a queue.
//! 2. Pop the front pair. A pair already used this epoch is dropped; a pair whose class is
//!    already in the current batch goes back to the end of the queue. Either pop is a
//!    failure; the walk ends after `max_failed_pops` consecutive failures (the reference's
//!    1,024, `MAX_FAILED_POPS`; 512 in its University-1652 loop), or when the queue is empty.
//! 3. Any other pair anchors: it joins the batch and the failures reset. Unless that filled
//!    the batch, the anchor class's neighbour list is tried: its first `select / 2` entries
//!    in order, then `select / 2` drawn at random from the rest of the list. For each listed
//!    class not in the batch that has unused pairs, one of them, drawn at random, joins the
//!    batch, and that class is removed (its first occurrence) from the anchor class's list
//!    for the rest of the epoch: a class that anchors again (VIGOR: a tile is the positive
//!    of one or two panoramas) pulls in its list's later entries instead.
//! 4. A batch closes at `batch_size` pairs; the incomplete tail is dropped.
//!
//! The random choices are SplitMix64 draws in a fixed order, each equal in distribution to
//! the reference's `random.shuffle` call it replaces (see `tests/reference.py`): the queue
//! shuffle; per anchor, a partial Fisher–Yates draw of the random half (an ordered uniform
//! sample, as the head of a shuffled rest); per pulled class with two or more unused pairs,
//! the index of its pair among them in pair order (the head of the shuffled pairs). Taking
//! instead the pair that comes first in the queue is not equal in distribution: it keeps the
//! later pair for later, which changes which pairs end up placed.
//! Deliberate differences that cannot change the result: the walk also ends once every
//! pair in the queue was put back since the last anchor (nothing can anchor any more; the
//! reference spins on to its limit); the lists are whole rows, with -1 padding skipped: s4g's
//! caller slices them to `neighbour_range` before packing, while `pack_batches_in_range`
//! cuts each anchor's list as it stands, as the reference does. Not followed: CVUSA's copy of the loop
//! never pulls class id 0 (a truthiness test on the id), an accident of that file.
//! The walk runs on one thread (only the input check uses several), so the result depends
//! on the inputs and seed alone.

mod check;
mod rng;
mod state;

pub use rng::SplitMix64;

use crate::error::SamplerError;
use state::{Lists, State};

/// The reference gives up after this many consecutive pops that add no pair to a batch
/// (its CVUSA, CVACT and VIGOR loops; University-1652's gives up after 512).
pub const MAX_FAILED_POPS: usize = 1024;

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

/// Pack pairs into full batches with no class twice per batch; see the module docs.
///
/// `pair_class`: (P,) class id of each pair. `neighbours`: per class, the hardest other
/// classes first, or None for class-unique random batches. `max_failed_pops` (>= 1): the
/// walk's patience. Returns the batches and counts.
pub fn pack_batches(
    pair_class: &[i64],
    neighbours: Option<Neighbours>,
    batch_size: usize,
    neighbour_select: usize,
    max_failed_pops: usize,
    seed: u64,
) -> Result<Packed, SamplerError> {
    pack_batches_in_range(
        pair_class,
        neighbours,
        batch_size,
        neighbour_select,
        usize::MAX,
        max_failed_pops,
        seed,
    )
}

/// `pack_batches`, with each anchor's list cut to its first `neighbour_range` entries at
/// the moment it anchors, after the classes it pulled in before were removed (the
/// reference's `similarity_pool[idx][:neighbour_range]`): entries beyond the range move up
/// as earlier ones are used. `usize::MAX`: the whole list, as `pack_batches`.
pub fn pack_batches_in_range(
    pair_class: &[i64],
    neighbours: Option<Neighbours>,
    batch_size: usize,
    neighbour_select: usize,
    neighbour_range: usize,
    max_failed_pops: usize,
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
            compacted = check::compact_ids(pair_class);
            &compacted[..]
        }
        _ => pair_class,
    };
    let n_classes = check::check(pair_class, neighbours, batch_size)?;
    if max_failed_pops == 0 {
        return Err(SamplerError::InvalidArgument(
            "max_failed_pops must be at least 1, got 0".into(),
        ));
    }
    let mut rng = SplitMix64::new(seed);
    let mut queue: Vec<u32> = (0..pair_class.len() as u32).collect();
    rng.shuffle(&mut queue);
    let mut st = State::new(pair_class, n_classes, batch_size);
    // select / 2 fixed plus select / 2 random, as the reference: an odd select loses one.
    let mut lists = neighbours
        .filter(|_| neighbour_select >= 2)
        .map(|nb| Lists::new(nb, neighbour_select / 2, neighbour_range));
    walk(
        &mut queue,
        pair_class,
        &mut st,
        lists.as_mut(),
        &mut rng,
        max_failed_pops,
    );
    let n_batches = st.out.len() / batch_size;
    Ok(Packed {
        dropped: pair_class.len() - st.out.len(),
        batches: st.out,
        n_batches,
        via_neighbour: st.via_neighbour,
    })
}

/// Steps 2–4 of the module docs over `queue`, used as a ring buffer: a pair sits in it at
/// most once, so P slots suffice.
fn walk(
    queue: &mut [u32],
    pair_class: &[i64],
    st: &mut State,
    mut lists: Option<&mut Lists>,
    rng: &mut SplitMix64,
    max_failed_pops: usize,
) {
    let p = queue.len();
    let (mut head, mut len) = (0usize, p);
    // `failed`: the reference's break counter. `requeued` (put back since the last anchor)
    // reaching `len` means the queue holds only put-back pairs while the batch is
    // unchanged: every later pop fails too, so stopping now gives the same result.
    let (mut failed, mut requeued) = (0usize, 0usize);
    while len > 0 && failed < max_failed_pops && requeued < len {
        let q = queue[head] as usize;
        head = (head + 1) % p;
        len -= 1;
        let c = pair_class[q] as usize;
        if st.used[q] {
            failed += 1;
            continue;
        }
        if st.in_batch(c) {
            queue[(head + len) % p] = q as u32;
            len += 1;
            failed += 1;
            requeued += 1;
            continue;
        }
        (failed, requeued) = (0, 0);
        if st.add(q, c, false) {
            continue;
        }
        if let Some(lists) = lists.as_deref_mut() {
            lists.pull_neighbours(c, st, rng);
        }
    }
}

#[cfg(test)]
mod tests;
