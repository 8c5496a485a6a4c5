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
        .message()
        .contains("k must"));
    assert!(topk_merge(b(&[f32::NAN]), 1, &[-1], &i, &v)
        .unwrap_err()
        .message()
        .contains("scores[0, 0]"));
    assert!(topk_merge(b(&[1.0]), 1, &[], &i, &v)
        .unwrap_err()
        .message()
        .contains("exclude"));
    assert!(topk_merge(b(&[1.0]), 1, &[-2], &i, &v)
        .unwrap_err()
        .message()
        .contains("exclude[0]"));
    assert!(topk_merge(b(&[1.0]), 1, &[-1], &[-3], &v)
        .unwrap_err()
        .message()
        .contains("best_idx"));
    assert!(topk_merge(b(&[1.0]), 2, &[-1], &i, &v)
        .unwrap_err()
        .message()
        .contains("shape"));
    let neg = Block {
        col_offset: -1,
        ..b(&[1.0])
    };
    assert!(topk_merge(neg, 1, &[-1], &i, &v)
        .unwrap_err()
        .message()
        .contains("col_offset"));
}

#[test]
fn key_order_is_rank_order_and_round_trips() {
    let values = [
        f32::NEG_INFINITY,
        -1.5,
        -f32::MIN_POSITIVE,
        -0.0,
        0.0,
        1e-40,
        0.25,
        f32::MAX,
        f32::INFINITY,
    ];
    let indices = [0i64, 1, 7, (1 << 40) + 3, i64::MAX];
    let entries: Vec<(f32, i64)> = values
        .iter()
        .flat_map(|&v| indices.iter().map(move |&j| (v, j)))
        .collect();
    for a in &entries {
        let (v, j) = unkey(key(a.0, a.1));
        assert_eq!(
            (v.to_bits(), j),
            (a.0.to_bits(), a.1),
            "round trip of {a:?}"
        );
        // a row never holds one index twice, so only entries with distinct indices meet
        for b in entries.iter().filter(|b| b.1 != a.1) {
            assert_eq!(
                key(a.0, a.1).cmp(&key(b.0, b.1)),
                rank(a, b),
                "{a:?} vs {b:?}"
            );
        }
    }
}

#[test]
fn nan_below_the_threshold_is_still_an_error() {
    // after the first block every row is full, so later scores face a high threshold
    let (idx, val) = (vec![-1i64; 2], vec![f32::NEG_INFINITY; 2]);
    let first = Block {
        scores: &[5.0, 4.0],
        rows: 1,
        cols: 2,
        col_offset: 0,
    };
    let (idx, val) = topk_merge(first, 2, &[-1], &idx, &val).unwrap();
    // column 37 sits in the tail after the last full group of 16, column 3 in a group
    for c in [37usize, 3] {
        let mut s = vec![-1.0f32; 40];
        s[c] = f32::NAN;
        let b = Block {
            scores: &s,
            rows: 1,
            cols: 40,
            col_offset: 2,
        };
        let err = topk_merge(b, 2, &[-1], &idx, &val)
            .unwrap_err()
            .message()
            .to_string();
        assert!(err.contains(&format!("scores[0, {c}] is NaN")), "{err}");
    }
}

#[test]
fn unordered_running_state_and_signed_zero() {
    // a caller's own (unsorted, gappy) running state is merged like any other
    let idx = vec![-1i64, 9, 4, -1];
    let val = vec![f32::NEG_INFINITY, 0.5, 2.0, 7.0];
    let b = Block {
        scores: &[-0.0, 1.0, 0.5],
        rows: 1,
        cols: 3,
        col_offset: 10,
    };
    let (i2, v2) = topk_merge(b, 4, &[11], &idx, &val).unwrap();
    assert_eq!(i2, vec![4, 9, 12, 10]);
    assert_eq!(v2[..3], [2.0, 0.5, 0.5]);
    assert_eq!(
        v2[3].to_bits(),
        (-0.0f32).to_bits(),
        "the score's own bits come back"
    );
    // merging nothing new returns the sorted state unchanged
    let empty = Block {
        scores: &[],
        rows: 1,
        cols: 0,
        col_offset: 20,
    };
    let (i3, v3) = topk_merge(empty, 4, &[-1], &i2, &v2).unwrap();
    assert_eq!(i3, i2);
    assert_eq!(
        v3.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        v2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn random_scores_many_blocks_equal_dense() {
    // continuous scores, k well below the width: exercises the threshold pass and the
    // periodic shrinking of the candidate list
    let mut rng = SplitMix64::new(7);
    let (q, r, k) = (9, 3000, 40);
    let full: Vec<f32> = (0..q * r)
        .map(|_| (rng.below(1 << 24) as f32 / (1u64 << 23) as f32) - 1.0)
        .collect();
    let exclude: Vec<i64> = (0..q).map(|i| (i * 311) as i64 - 1).collect();
    for w in [100, 1000, 3000] {
        let (bi, bv) = blocked(&full, q, r, k, w, &exclude);
        let (di, dv) = dense(&full, q, r, k, &exclude);
        assert_eq!(bi, di, "width {w}");
        assert_eq!(bv, dv);
    }
    // wide rows, small k: the first block's floor comes from a strided sample
    let (q, r, k) = (3, 20_000, 5);
    let full: Vec<f32> = (0..q * r).map(|_| rng.below(1000) as f32).collect();
    let exclude = [-1i64, 0, 19_999];
    assert_eq!(
        blocked(&full, q, r, k, r, &exclude),
        dense(&full, q, r, k, &exclude)
    );
}

#[test]
fn sampled_floor_misses_fall_back_to_a_full_scan() {
    // the large scores sit exactly at the sampled columns (stride 8): the sample's floor is
    // reached by only ~2.5k/8 < k scores, so the row must be scanned again without it
    let (r, k) = (8 * SAMPLE, 16);
    let row: Vec<f32> = (0..r)
        .map(|c| {
            if c % 8 == 0 {
                1e4 - c as f32
            } else {
                -(c as f32)
            }
        })
        .collect();
    let exclude = [8i64];
    let (di, dv) = dense(&row, 1, r, k, &exclude);
    let (idx, val) = (vec![-1i64; k], vec![f32::NEG_INFINITY; k]);
    let b = Block {
        scores: &row,
        rows: 1,
        cols: r,
        col_offset: 0,
    };
    let (bi, bv) = topk_merge(b, k, &exclude, &idx, &val).unwrap();
    assert_eq!((bi, bv), (di, dv));
}
