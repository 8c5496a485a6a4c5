//! Running top-k over blocks of similarity scores, for bounded-memory mining on CPU.
//!
//! The caller computes a block S = Q_blk · R_blkᵀ (fast BLAS) and merges it into each row's
//! running best k. Rows are ordered by (score descending, global column ascending), entries
//! with index -1 (empty) last — exactly what a stable dense argsort of -S would give.

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

/// Order of two (score, index) entries: better first; index -1 (empty) after everything.
#[inline]
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

fn check(
    block: &Block,
    k: usize,
    exclude: &[i64],
    best_idx: &[i64],
    best_val: &[f32],
) -> Result<(), SamplerError> {
    let (q, r) = (block.rows, block.cols);
    if k < 1 {
        bail!("k must be at least 1, got {k}");
    }
    if block.scores.len() != q * r {
        bail!(
            "scores holds {} values, not rows*cols = {}",
            block.scores.len(),
            q * r
        );
    }
    if block.col_offset < 0 {
        bail!("col_offset must be >= 0, got {}", block.col_offset);
    }
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
/// but not NaN (an error naming the first NaN found).
pub fn topk_merge(
    block: Block,
    k: usize,
    exclude: &[i64],
    best_idx: &[i64],
    best_val: &[f32],
) -> Result<(Vec<i64>, Vec<f32>), SamplerError> {
    check(&block, k, exclude, best_idx, best_val)?;
    let (q, r) = (block.rows, block.cols);
    let mut new_idx = vec![-1i64; q * k];
    let mut new_val = vec![f32::NEG_INFINITY; q * k];
    let rows = new_idx
        .par_chunks_mut(k)
        .zip(new_val.par_chunks_mut(k))
        .enumerate();
    rows.try_for_each_init(
        Vec::new,
        |cand: &mut Vec<(f32, i64)>, (i, (out_idx, out_val))| {
            let prev = (0..k).map(|t| (best_val[i * k + t], best_idx[i * k + t]));
            let row = &block.scores[i * r..(i + 1) * r];
            if let Err(c) = merge_row(row, block.col_offset, k, exclude[i], prev, cand) {
                bail!("scores[{i}, {c}] is NaN");
            }
            for (t, &(v, j)) in cand.iter().take(k).enumerate() {
                out_idx[t] = j;
                out_val[t] = if j < 0 { f32::NEG_INFINITY } else { v };
            }
            Ok(())
        },
    )?;
    Ok((new_idx, new_val))
}

/// Fill `cand` with the best k of `prev` ∪ row, sorted; Err(column) at a NaN score.
///
/// Once k entries are known, a new score must reach the k-th best to matter, so most of a
/// row costs one comparison; `!(v < worst)` also lets NaN through to be caught.
fn merge_row(
    row: &[f32],
    offset: i64,
    k: usize,
    exclude: i64,
    prev: impl Iterator<Item = (f32, i64)>,
    cand: &mut Vec<(f32, i64)>,
) -> Result<(), usize> {
    cand.clear();
    cand.extend(prev.filter(|e| e.1 >= 0));
    let cap = (2 * k).max(64);
    // (worst score, its index): the k-th best so far, or (-inf, MAX) while fewer than k.
    let mut worst = (f32::NEG_INFINITY, i64::MAX);
    if cand.len() >= k {
        worst = keep_best(cand, k);
    }
    for (c, &v) in row.iter().enumerate() {
        if v < worst.0 {
            continue;
        }
        if v.is_nan() {
            return Err(c);
        }
        let j = offset + c as i64;
        if (v == worst.0 && j > worst.1) || j == exclude {
            continue;
        }
        cand.push((v, j));
        if cand.len() >= cap {
            worst = keep_best(cand, k);
        }
    }
    if cand.len() > k {
        keep_best(cand, k);
    }
    cand.sort_unstable_by(rank);
    Ok(())
}

/// Keep the best k entries of `cand` (len >= k); returns the k-th.
#[inline]
fn keep_best(cand: &mut Vec<(f32, i64)>, k: usize) -> (f32, i64) {
    cand.select_nth_unstable_by(k - 1, rank);
    cand.truncate(k);
    cand[k - 1]
}

#[cfg(test)]
mod tests;
