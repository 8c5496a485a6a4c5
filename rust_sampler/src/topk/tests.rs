//! Unit tests of `topk` (kept beside the module to keep files short).
use super::*;
use crate::pack::SplitMix64;

/// Dense oracle: sort every column of the full matrix by (score desc, column asc).
fn dense(full: &[f32], q: usize, r: usize, k: usize, exclude: &[i64]) -> (Vec<i64>, Vec<f32>) {
    let (mut idx, mut val) = (vec![-1i64; q * k], vec![f32::NEG_INFINITY; q * k]);
    for i in 0..q {
        let mut row: Vec<(f32, i64)> = (0..r)
            .filter(|&j| j as i64 != exclude[i])
            .map(|j| (full[i * r + j], j as i64))
            .collect();
        row.sort_by(rank);
        for (t, &(v, j)) in row.iter().take(k).enumerate() {
            idx[i * k + t] = j;
            val[i * k + t] = v;
        }
    }
    (idx, val)
}

/// Merge `full` in column blocks of width `w`.
fn blocked(
    full: &[f32],
    q: usize,
    r: usize,
    k: usize,
    w: usize,
    exclude: &[i64],
) -> (Vec<i64>, Vec<f32>) {
    let (mut idx, mut val) = (vec![-1i64; q * k], vec![f32::NEG_INFINITY; q * k]);
    for start in (0..r).step_by(w) {
        let end = (start + w).min(r);
        let block: Vec<f32> = (0..q)
            .flat_map(|i| full[i * r + start..i * r + end].to_vec())
            .collect();
        let b = Block {
            scores: &block,
            rows: q,
            cols: end - start,
            col_offset: start as i64,
        };
        (idx, val) = topk_merge(b, k, exclude, &idx, &val).unwrap();
    }
    (idx, val)
}

#[test]
fn blocks_equal_dense_sort_with_ties() {
    let mut rng = SplitMix64::new(1);
    for round in 0..30 {
        let (q, r) = (1 + rng.below(20) as usize, 1 + rng.below(300) as usize);
        let k = 1 + rng.below(150) as usize;
        // few distinct values => many ties (duplicate columns); -0.0 equals 0.0; ±inf are scores
        let levels = [0.5f32, -0.25, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY];
        let full: Vec<f32> = (0..q * r).map(|_| levels[rng.below(6) as usize]).collect();
        let exclude: Vec<i64> = (0..q).map(|_| rng.below(r as u64 + 1) as i64 - 1).collect();
        let w = 1 + rng.below(64) as usize;
        let (bi, bv) = blocked(&full, q, r, k, w, &exclude);
        let (di, dv) = dense(&full, q, r, k, &exclude);
        assert_eq!(bi, di, "round {round}");
        assert_eq!(bv, dv);
    }
}

#[test]
fn empty_block_and_k_above_columns() {
    let (idx, val) = (vec![-1i64; 2 * 3], vec![f32::NEG_INFINITY; 6]);
    let b = Block {
        scores: &[],
        rows: 2,
        cols: 0,
        col_offset: 0,
    };
    let (i2, v2) = topk_merge(b, 3, &[-1, -1], &idx, &val).unwrap();
    assert_eq!((i2.clone(), v2), (idx.clone(), val.clone()));
    let b = Block {
        scores: &[3.0, 1.0],
        rows: 2,
        cols: 1,
        col_offset: 5,
    };
    let (i3, v3) = topk_merge(b, 3, &[-1, 5], &i2, &val).unwrap();
    assert_eq!(i3, vec![5, -1, -1, -1, -1, -1]);
    assert_eq!(v3[0], 3.0);
    assert!(v3[1..].iter().all(|v| *v == f32::NEG_INFINITY));
}

#[test]
fn bad_input_is_an_error() {
    let b = |s: &'static [f32]| Block {
        scores: s,
        rows: 1,
        cols: s.len(),
        col_offset: 0,
    };
    let (i, v) = (vec![-1i64], vec![f32::NEG_INFINITY]);
    assert!(topk_merge(b(&[1.0]), 0, &[-1], &i, &v)
        .unwrap_err()
        .0
        .contains("k must"));
    assert!(topk_merge(b(&[f32::NAN]), 1, &[-1], &i, &v)
        .unwrap_err()
        .0
        .contains("scores[0, 0]"));
    assert!(topk_merge(b(&[1.0]), 1, &[], &i, &v)
        .unwrap_err()
        .0
        .contains("exclude"));
    assert!(topk_merge(b(&[1.0]), 1, &[-2], &i, &v)
        .unwrap_err()
        .0
        .contains("exclude[0]"));
    assert!(topk_merge(b(&[1.0]), 1, &[-1], &[-3], &v)
        .unwrap_err()
        .0
        .contains("best_idx"));
    assert!(topk_merge(b(&[1.0]), 2, &[-1], &i, &v)
        .unwrap_err()
        .0
        .contains("shape"));
    let neg = Block {
        col_offset: -1,
        ..b(&[1.0])
    };
    assert!(topk_merge(neg, 1, &[-1], &i, &v)
        .unwrap_err()
        .0
        .contains("col_offset"));
}
