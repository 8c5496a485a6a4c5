//! Running top-k over blocks of similarity scores, for bounded-memory mining on CPU.
//!
//! The caller computes a block S = Q_blk · R_blkᵀ (fast BLAS) and merges it into each row's
//! running best k. Rows are ordered by (score descending, global column ascending), entries
//! with index -1 (empty) last — exactly what a stable dense argsort of -S would give.
//!
//! Cost: once a row holds k entries, its k-th best is a threshold that almost no later score
//! beats, so a merge is one vectorisable pass over the block (16 scores per test) plus work
//! proportional to the few scores that pass. A row's first block starts from a floor taken
//! from a sample of its scores (checked afterwards, rescanned without it if too high).
//! Entries are packed into one u128 key whose integer order is the output order, so
//! selecting, sorting and merging compare integers.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::{bail, SamplerError};

/// One block of scores and where its columns sit globally.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    /// (rows × cols) row-major scores.
    pub scores: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Global index of the block's first column.
    pub col_offset: i64,
}

impl Block<'_> {
    /// The block's own consistency: rows*cols scores, a column offset >= 0.
    pub fn check(&self) -> Result<(), SamplerError> {
        if self.scores.len() != self.rows * self.cols {
            bail!(
                "scores holds {} values, not rows*cols = {}",
                self.scores.len(),
                self.rows * self.cols
            );
        }
        if self.col_offset < 0 {
            bail!("col_offset must be >= 0, got {}", self.col_offset);
        }
        Ok(())
    }
}

/// Rows handed to one rayon task: enough to amortise scheduling, few enough to balance.
const ROWS_PER_TASK: usize = 8;
/// Scores tested together in the threshold pass (a few SIMD compares and one branch).
const LANES: usize = 16;

/// Order of two (score, index) entries: better first; index -1 (empty) after everything.
/// The reference order that `key` encodes (tests check the two agree).
#[cfg_attr(not(test), allow(dead_code))]
fn rank(a: &(f32, i64), b: &(f32, i64)) -> Ordering {
    match (a.1 < 0, b.1 < 0) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // No NaN gets this far, so partial_cmp is total; -0.0 == 0.0 as in numpy.
        (false, false) => {
            b.0.partial_cmp(&a.0)
                .unwrap_or(Ordering::Equal)
                .then(a.1.cmp(&b.1))
        }
    }
}

/// Sort key of a (non-NaN score, index >= 0) entry: smaller key = better entry.
///
/// Bits 96..128: the score mapped to an order-reversing u32 (-0.0 first made +0.0 so the two
/// tie); bits 32..96: the index (< 2^63, so ties go to the lower index); bits 0..32: the
/// score's own bits, which never decide an order (indices are distinct) but give the value
/// back exactly, -0.0 included.
#[inline]
fn key(v: f32, j: i64) -> u128 {
    ((!ascending(v) as u128) << 96) | ((j as u64 as u128) << 32) | v.to_bits() as u128
}

#[inline]
fn unkey(key: u128) -> (f32, i64) {
    (f32::from_bits(key as u32), (key >> 32) as u64 as i64)
}

/// Per-task scratch, reused across rows: one row's candidate keys, and a sample of its
/// scores' order keys (`ascending`) for a first threshold.
#[derive(Default)]
struct Scratch {
    cand: Vec<u128>,
    sample: Vec<u32>,
}

/// A row with fewer than k entries and at least SAMPLE_FROM·k scores gets its first
/// threshold from a sample of SAMPLE scores instead of starting at -inf.
const SAMPLE_FROM: usize = 8;
const SAMPLE: usize = 512;

/// Order-preserving u32 of a non-NaN score (-0.0 ties with 0.0).
#[inline]
fn ascending(v: f32) -> u32 {
    let bits = (v + 0.0).to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The score whose `ascending` is a.
#[inline]
fn from_ascending(a: u32) -> f32 {
    f32::from_bits(if a >> 31 == 1 { a & 0x7FFF_FFFF } else { !a })
}

fn check(
    block: &Block,
    k: usize,
    exclude: &[i64],
    best_idx: &[i64],
    best_val: &[f32],
) -> Result<(), SamplerError> {
    let q = block.rows;
    if k < 1 {
        bail!("k must be at least 1, got {k}");
    }
    block.check()?;
    if exclude.len() != q {
        bail!(
            "exclude must have one entry per score row ({q}), got {}",
            exclude.len()
        );
    }
    if best_idx.len() != q * k || best_val.len() != q * k {
        bail!("best_idx and best_val must both have shape ({q}, {k})");
    }
    if let Some(i) = exclude.iter().position(|&e| e < -1) {
        bail!(
            "exclude[{i}] = {} is negative (use -1 for none)",
            exclude[i]
        );
    }
    if let Some(i) = best_idx.iter().position(|&e| e < -1) {
        bail!(
            "best_idx[{}, {}] = {} is negative (use -1 for empty)",
            i / k,
            i % k,
            best_idx[i]
        );
    }
    if let Some(i) = best_val
        .iter()
        .zip(best_idx)
        .position(|(v, &j)| j >= 0 && v.is_nan())
    {
        bail!("best_val[{}, {}] is NaN", i / k, i % k);
    }
    Ok(())
}

/// Merge one block into every row's running top-k; returns the new (idx, val), (q × k).
///
/// `exclude[i]` is a global column to skip for row i (-1 = none). The block's columns must
/// not overlap columns merged before (each global column is seen once). Scores may be ±inf
/// but not NaN: every score takes part in the threshold test, which a NaN never fails, so
/// any NaN in the block is found and reported (an error naming one).
pub fn topk_merge(
    block: Block,
    k: usize,
    exclude: &[i64],
    best_idx: &[i64],
    best_val: &[f32],
) -> Result<(Vec<i64>, Vec<f32>), SamplerError> {
    check(&block, k, exclude, best_idx, best_val)?;
    let r = block.cols;
    let mut new_idx = vec![-1i64; block.rows * k];
    let mut new_val = vec![f32::NEG_INFINITY; block.rows * k];
    let tasks = new_idx
        .par_chunks_mut(k * ROWS_PER_TASK)
        .zip(new_val.par_chunks_mut(k * ROWS_PER_TASK))
        .enumerate();
    tasks.try_for_each_init(Scratch::default, |scratch, (task, (task_idx, task_val))| {
        let outs = task_idx.chunks_mut(k).zip(task_val.chunks_mut(k));
        for (i, (out_idx, out_val)) in (task * ROWS_PER_TASK..).zip(outs) {
            let row = Row {
                scores: &block.scores[i * r..(i + 1) * r],
                offset: block.col_offset,
                exclude: exclude[i],
                prev_idx: &best_idx[i * k..(i + 1) * k],
                prev_val: &best_val[i * k..(i + 1) * k],
            };
            if let Err(c) = row.merge(scratch, out_idx, out_val) {
                bail!("scores[{i}, {c}] is NaN");
            }
        }
        Ok(())
    })?;
    Ok((new_idx, new_val))
}

/// One row's inputs: its block scores and its running top-k.
struct Row<'a> {
    scores: &'a [f32],
    offset: i64,
    exclude: i64,
    prev_idx: &'a [i64],
    prev_val: &'a [f32],
}

impl Row<'_> {
    /// Write the best k of prev ∪ scores, sorted, to out; Err(column) at a NaN score.
    fn merge(
        &self,
        scratch: &mut Scratch,
        out_idx: &mut [i64],
        out_val: &mut [f32],
    ) -> Result<(), usize> {
        let k = out_idx.len();
        let cand = &mut scratch.cand;
        cand.clear();
        // sorted: prev is a merge output (valid entries first, in order), as in mining
        let (mut sorted, mut seen_empty) = (true, false);
        for (&j, &v) in self.prev_idx.iter().zip(self.prev_val) {
            if j < 0 {
                seen_empty = true;
                continue;
            }
            let e = key(v, j);
            sorted &= !seen_empty && cand.last().is_none_or(|&last| last < e);
            cand.push(e);
        }
        let n_prev = cand.len();
        // the worst entry that still belongs to the top k: only better ones can enter
        let mut worst = match (n_prev >= k, sorted) {
            (true, true) => cand[k - 1],
            (true, false) => keep_best(cand, k),
            (false, _) => u128::MAX,
        };
        let mut pushed = None;
        if worst == u128::MAX && self.scores.len() >= SAMPLE_FROM * k {
            // A guessed floor: if k scores reach it, the k-th best does too, so nothing
            // below it can belong to the top k; otherwise (rare) scan again without it.
            let floor = self.sampled_floor(&mut scratch.sample, k);
            let n = self.scan(cand, k, &mut worst, floor)?;
            if n >= k {
                pushed = Some(n);
            } else {
                // cand never filled up (n_prev + n < 2k), so it still starts with prev
                cand.truncate(n_prev);
                worst = u128::MAX;
            }
        }
        let pushed = match pushed {
            Some(n) => n,
            None => self.scan(cand, k, &mut worst, f32::NEG_INFINITY)?,
        };
        if sorted && cand.len() - n_prev == pushed {
            // No shrink happened (a shrink drops entries), so cand is prev in order followed
            // by the new entries: sort only those and merge the two runs.
            let (head, tail) = cand.split_at_mut(n_prev);
            tail.sort_unstable();
            write_merged(head, tail, out_idx, out_val);
        } else {
            if cand.len() > k {
                keep_best(cand, k);
            }
            cand.sort_unstable();
            write_merged(cand, &[], out_idx, out_val);
        }
        Ok(())
    }

    /// Push every score that reaches `floor`, beats `worst` and is not excluded into cand,
    /// shrinking cand to its best k whenever it fills up; returns how many were pushed.
    ///
    /// The group test `!(v < t)` lets through scores >= t and every NaN, so a group of
    /// LANES scores that passes none of them holds no candidate and no NaN.
    fn scan(
        &self,
        cand: &mut Vec<u128>,
        k: usize,
        worst: &mut u128,
        floor: f32,
    ) -> Result<usize, usize> {
        let mut s = Selection {
            cand,
            k,
            cap: (2 * k).max(64),
            worst: *worst,
            t: floor,
            pushed: 0,
        };
        if s.worst != u128::MAX {
            s.t = unkey(s.worst).0;
        }
        let mut groups = self.scores.chunks_exact(LANES);
        for (g, group) in groups.by_ref().enumerate() {
            let group: &[f32; LANES] = group.try_into().expect("chunks_exact gives LANES");
            let passed = passing(group, s.t);
            if passed != 0 {
                self.admit(g * LANES, group, passed, &mut s)?;
            }
        }
        let rest = groups.remainder();
        let mut last = [f32::NEG_INFINITY; LANES];
        last[..rest.len()].copy_from_slice(rest);
        let passed = passing(&last, s.t) & ((1 << rest.len()) - 1);
        self.admit(self.scores.len() - rest.len(), &last, passed, &mut s)?;
        *worst = s.worst;
        Ok(s.pushed)
    }

    /// A score that about 2.5·k of the row's scores reach: the matching rank in an evenly
    /// strided sample. NaN scores give some floor too; the scan reports them either way.
    fn sampled_floor(&self, sample: &mut Vec<u32>, k: usize) -> f32 {
        let n = self.scores.len();
        let stride = (n / SAMPLE).max(1);
        sample.clear();
        sample.extend(self.scores.iter().step_by(stride).map(|&v| ascending(v)));
        let m = sample.len();
        let rank = (5 * k * m).div_ceil(2 * n).clamp(1, m);
        from_ascending(*sample.select_nth_unstable(m - rank).1)
    }

    /// The exact test for the scores of one group (columns from `first`) that `passing`
    /// flagged; the threshold may have risen since, so each is tested again.
    fn admit(
        &self,
        first: usize,
        group: &[f32; LANES],
        mut passed: u32,
        s: &mut Selection,
    ) -> Result<(), usize> {
        while passed != 0 {
            let lane = passed.trailing_zeros() as usize;
            passed &= passed - 1;
            let (c, v) = (first + lane, group[lane]);
            if v < s.t {
                continue;
            }
            if v.is_nan() {
                return Err(c);
            }
            let j = self.offset + c as i64;
            let e = key(v, j);
            if e >= s.worst || j == self.exclude {
                continue;
            }
            s.cand.push(e);
            s.pushed += 1;
            if s.cand.len() >= s.cap {
                s.worst = keep_best(s.cand, s.k);
                s.t = unkey(s.worst).0;
            }
        }
        Ok(())
    }
}

/// A row's selection in progress: candidates and the k-th best known so far.
struct Selection<'a> {
    cand: &'a mut Vec<u128>,
    k: usize,
    cap: usize,
    /// Key of the k-th best entry so far (u128::MAX while fewer than k are known)...
    worst: u128,
    /// ...and its score: any score below it cannot enter.
    t: f32,
    pushed: usize,
}

/// Bit i set where group[i] is not below t (or is NaN). A fixed-size loop without
/// branches, which the compiler turns into vector compares and one mask move.
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // !(v < t) on purpose: true for NaN
fn passing(group: &[f32; LANES], t: f32) -> u32 {
    group
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &v)| mask | (u32::from(!(v < t)) << i))
}

/// Write the best out.len() entries of two ascending key runs to out, padded with -1/-inf.
fn write_merged(a: &[u128], b: &[u128], out_idx: &mut [i64], out_val: &mut [f32]) {
    let (mut ia, mut ib) = (0, 0);
    for (oi, ov) in out_idx.iter_mut().zip(out_val.iter_mut()) {
        let from_a = match (a.get(ia), b.get(ib)) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => {
                (*oi, *ov) = (-1, f32::NEG_INFINITY);
                continue;
            }
        };
        let e = if from_a {
            ia += 1;
            a[ia - 1]
        } else {
            ib += 1;
            b[ib - 1]
        };
        (*ov, *oi) = unkey(e);
    }
}

/// Keep the best k keys of `cand` (len >= k), unordered; returns the k-th best.
#[inline]
fn keep_best(cand: &mut Vec<u128>, k: usize) -> u128 {
    cand.select_nth_unstable(k - 1);
    cand.truncate(k);
    cand[k - 1]
}

#[cfg(test)]
mod tests;
