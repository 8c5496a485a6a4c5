//! Input checks of `pack_batches`, and the renumbering of sparse class ids.

use rayon::prelude::*;

use super::Neighbours;
use crate::error::{bail, SamplerError};

/// Number of classes and a check of every id; the message names the argument and row.
pub(super) fn check(
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
        // The walk stores listed class ids as u32.
        if nb.rows >= u32::MAX as usize {
            bail!(
                "at most {} classes are supported, neighbours has {} rows",
                u32::MAX - 1,
                nb.rows
            );
        }
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
pub(super) fn compact_ids(pair_class: &[i64]) -> Vec<i64> {
    let mut ids: Vec<i64> = pair_class.iter().copied().filter(|&c| c >= 0).collect();
    ids.sort_unstable();
    ids.dedup();
    let rank = |c: i64| ids.binary_search(&c).map_or(c, |r| r as i64);
    pair_class
        .iter()
        .map(|&c| if c < 0 { c } else { rank(c) })
        .collect()
}
