//! One pass over a block of scores for streamed retrieval metrics (s4g.retrieval.evaluate).
//!
//! Before the pass, each positive of a query is known only to score inside a window
//! (lo, hi] (its block score is read from the same block product, later). Per row of the
//! block this counts the scores strictly above each of the row's `hi`, keeps the rare scores
//! inside some window (to be compared with the positive's block score afterwards), and finds
//! the row's highest score and its lowest column — the reductions that torch would do in
//! several passes over the block, in one read of it.
//!
//! Cost: scores are tested 16 at a time against the lower of the row's lowest lo and its
//! running best; a group with no score above it is skipped, so a row is one vectorisable
//! pass plus work for the few scores that reach a window or raise the best.

use rayon::prelude::*;

use crate::error::{bail, SamplerError};
use crate::topk::Block;

/// Rows handed to one rayon task: enough to amortise scheduling, few enough to balance.
const ROWS_PER_TASK: usize = 16;
/// Scores tested together (a few SIMD compares and one branch).
const LANES: usize = 16;

/// Per-row windows: (rows × slots) row-major bounds; +inf in both marks an empty slot.
#[derive(Clone, Copy, Debug)]
pub struct Windows<'a> {
    pub lo: &'a [f32],
    pub hi: &'a [f32],
    pub slots: usize,
}

/// What one block adds: `above` (rows × slots) scores strictly above each hi; `best_val`,
/// `best_col` per row, the highest score and its lowest global column (-inf and -1 when no
/// score beats -inf); `window_row`, `window_val`, the scores inside some window of their
/// row (lo < s <= hi for some slot), row-major.
#[derive(Debug, Default, PartialEq)]
pub struct Counted {
    pub above: Vec<i64>,
    pub best_val: Vec<f32>,
    pub best_col: Vec<i64>,
    pub window_row: Vec<i64>,
    pub window_val: Vec<f32>,
}

/// Count one block; see the module documentation. NaN scores count nowhere.
pub fn count_above(block: Block, windows: Windows) -> Result<Counted, SamplerError> {
    let (rows, cols, slots) = (block.rows, block.cols, windows.slots);
    block.check()?;
    if slots == 0 {
        bail!("lo and hi need at least one column (slot)");
    }
    if windows.lo.len() != rows * slots || windows.hi.len() != rows * slots {
        bail!("lo and hi must both have shape ({rows}, {slots}) to match the scores");
    }
    let mut out = Counted {
        above: vec![0; rows * slots],
        best_val: vec![f32::NEG_INFINITY; rows],
        best_col: vec![-1; rows],
        ..Counted::default()
    };
    let per_task: Vec<(Vec<i64>, Vec<f32>)> = out
        .above
        .par_chunks_mut(slots * ROWS_PER_TASK)
        .zip(out.best_val.par_chunks_mut(ROWS_PER_TASK))
        .zip(out.best_col.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .map(|(task, ((above, best_val), best_col))| {
            let mut kept = (Vec::new(), Vec::new());
            for (n, i) in (task * ROWS_PER_TASK..).take(best_val.len()).enumerate() {
                let row = Row {
                    scores: &block.scores[i * cols..(i + 1) * cols],
                    lo: &windows.lo[i * slots..(i + 1) * slots],
                    hi: &windows.hi[i * slots..(i + 1) * slots],
                };
                let (val, col) = row.count(&mut above[n * slots..(n + 1) * slots], |v| {
                    kept.0.push(i as i64);
                    kept.1.push(v);
                });
                best_val[n] = val;
                best_col[n] = if col < 0 { -1 } else { col + block.col_offset };
            }
            kept
        })
        .collect();
    for (r, v) in per_task {
        out.window_row.extend(r);
        out.window_val.extend(v);
    }
    Ok(out)
}

struct Row<'a> {
    scores: &'a [f32],
    lo: &'a [f32],
    hi: &'a [f32],
}

impl Row<'_> {
    /// Add to `above` and report window scores to `keep`; -> (highest score, its column).
    fn count(&self, above: &mut [i64], mut keep: impl FnMut(f32)) -> (f32, i64) {
        let floor = self.lo.iter().copied().fold(f32::INFINITY, f32::min);
        let (mut best, mut col) = (f32::NEG_INFINITY, -1i64);
        let mut visit = |j: usize, v: f32, best: &mut f32, col: &mut i64| {
            if v > *best {
                (*best, *col) = (v, j as i64);
            }
            if v > floor {
                let mut inside = false;
                for (s, (&lo, &hi)) in self.lo.iter().zip(self.hi).enumerate() {
                    if v > hi {
                        above[s] += 1;
                    } else if v > lo {
                        inside = true;
                    }
                }
                if inside {
                    keep(v);
                }
            }
        };
        let groups = self.scores.chunks_exact(LANES);
        let tail = groups.remainder();
        for (g, group) in groups.enumerate() {
            let group: &[f32; LANES] = group.try_into().expect("chunks_exact gives LANES");
            let mut passed = any_above(group, best.min(floor));
            while passed != 0 {
                let j = passed.trailing_zeros() as usize;
                visit(g * LANES + j, group[j], &mut best, &mut col);
                passed &= passed - 1;
            }
        }
        let start = self.scores.len() - tail.len();
        for (j, &v) in tail.iter().enumerate() {
            visit(start + j, v, &mut best, &mut col);
        }
        (best, col)
    }
}

/// Bit i set where group[i] > t (never for NaN). A fixed-size loop without branches, which
/// the compiler turns into vector compares and one mask move.
#[inline]
fn any_above(group: &[f32; LANES], t: f32) -> u32 {
    group
        .iter()
        .enumerate()
        .fold(0, |mask, (i, &v)| mask | (u32::from(v > t) << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one score at a time.
    fn oracle(
        scores: &[f32],
        rows: usize,
        lo: &[f32],
        hi: &[f32],
        slots: usize,
        offset: i64,
    ) -> Counted {
        let cols = scores.len() / rows.max(1);
        let mut out = Counted {
            above: vec![0; rows * slots],
            best_val: vec![f32::NEG_INFINITY; rows],
            best_col: vec![-1; rows],
            ..Counted::default()
        };
        for i in 0..rows {
            for j in 0..cols {
                let v = scores[i * cols + j];
                if v > out.best_val[i] {
                    out.best_val[i] = v;
                    out.best_col[i] = j as i64 + offset;
                }
                let mut inside = false;
                for s in 0..slots {
                    if v > hi[i * slots + s] {
                        out.above[i * slots + s] += 1;
                    } else if v > lo[i * slots + s] {
                        inside = true;
                    }
                }
                if inside {
                    out.window_row.push(i as i64);
                    out.window_val.push(v);
                }
            }
        }
        out
    }

    /// A small deterministic generator (the tests need no crate for it).
    fn values(n: usize, seed: u64, levels: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % levels) as f32 / levels as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn equals_the_definition() {
        for (seed, (rows, cols, slots)) in [(1, 7), (3, 40), (20, 35), (33, 100), (5, 1)]
            .iter()
            .flat_map(|&(r, c)| [(r, c, 1), (r, c, 3), (r, c, 6)])
            .enumerate()
        {
            // few levels: exact ties between scores and bounds are common
            let scores = values(rows * cols, seed as u64, 9);
            let lo = values(rows * slots, 100 + seed as u64, 9);
            let mut hi: Vec<f32> = lo
                .iter()
                .zip(values(rows * slots, 200 + seed as u64, 3))
                .map(|(l, w)| l + w.abs())
                .collect();
            let mut lo = lo;
            if slots > 1 {
                lo[slots - 1] = f32::INFINITY; // a padded slot
                hi[slots - 1] = f32::INFINITY;
            }
            let block = Block {
                scores: &scores,
                rows,
                cols,
                col_offset: 5,
            };
            let got = count_above(
                block,
                Windows {
                    lo: &lo,
                    hi: &hi,
                    slots,
                },
            )
            .unwrap();
            assert_eq!(
                got,
                oracle(&scores, rows, &lo, &hi, slots, 5),
                "rows {rows} cols {cols} slots {slots}"
            );
        }
    }

    #[test]
    fn the_first_of_equal_maxima_and_empty_rows() {
        let scores = [
            1.0,
            3.0,
            3.0,
            2.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
        ];
        let inf = [f32::INFINITY; 2];
        let got = count_above(
            Block {
                scores: &scores,
                rows: 2,
                cols: 4,
                col_offset: 10,
            },
            Windows {
                lo: &inf,
                hi: &inf,
                slots: 1,
            },
        )
        .unwrap();
        assert_eq!(
            (got.best_val, got.best_col),
            (vec![3.0, f32::NEG_INFINITY], vec![11, -1])
        );
        assert_eq!(got.above, vec![0, 0]);
    }

    #[test]
    fn refuses_mismatched_shapes() {
        let s = [0.0f32; 6];
        let w = [0.0f32; 2];
        let err = count_above(
            Block {
                scores: &s,
                rows: 2,
                cols: 3,
                col_offset: 0,
            },
            Windows {
                lo: &w,
                hi: &w[..1],
                slots: 1,
            },
        );
        assert!(matches!(err, Err(SamplerError::InvalidArgument(_))));
    }
}
