//! Unit tests of `pack` (kept beside the module to keep files short).
use super::*;

fn check_invariants(p: &Packed, pair_class: &[i64], batch_size: usize) {
    assert_eq!(p.batches.len(), p.n_batches * batch_size);
    assert_eq!(p.dropped, pair_class.len() - p.batches.len());
    let mut seen = vec![false; pair_class.len()];
    for batch in p.batches.chunks(batch_size) {
        let mut classes: Vec<i64> = batch.iter().map(|&q| pair_class[q as usize]).collect();
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes.len(), batch_size, "a class twice in a batch");
        for &q in batch {
            assert!(
                !std::mem::replace(&mut seen[q as usize], true),
                "pair {q} twice"
            );
        }
    }
}

/// P pairs over C classes (some classes with several pairs) and K random neighbours each.
fn world(rng: &mut SplitMix64, p: usize, c: usize, k: usize) -> (Vec<i64>, Vec<i64>) {
    let classes = (0..p)
        .map(|i| {
            if i < c {
                i as i64
            } else {
                rng.below(c as u64) as i64
            }
        })
        .collect();
    let nb = (0..c * k)
        .map(|_| {
            if rng.below(10) == 0 {
                -1
            } else {
                rng.below(c as u64) as i64
            }
        })
        .collect();
    (classes, nb)
}

#[test]
fn splitmix_reference_values() {
    // First outputs for seed 0 from the published SplitMix64 reference implementation.
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    let mut r = SplitMix64::new(3);
    assert!((0..1000).all(|_| r.below(7) < 7));
}

#[test]
fn invariants_and_determinism() {
    let mut rng = SplitMix64::new(11);
    for round in 0..40 {
        let (c, k) = (20 + rng.below(200) as usize, 1 + rng.below(40) as usize);
        let p = c + rng.below(300) as usize;
        let (classes, nb) = world(&mut rng, p, c, k);
        let bs = 2 + rng.below(16) as usize;
        let nbrs = (round % 4 != 0).then_some(Neighbours {
            data: &nb,
            rows: c,
            width: k,
        });
        let sel = rng.below(70) as usize;
        let a = pack_batches(&classes, nbrs, bs, sel, MAX_FAILED_POPS, round).unwrap();
        check_invariants(&a, &classes, bs);
        assert_eq!(
            a,
            pack_batches(&classes, nbrs, bs, sel, MAX_FAILED_POPS, round).unwrap()
        );
        if nbrs.is_none() {
            assert_eq!(a.via_neighbour, 0);
        }
    }
}

#[test]
fn unique_classes_place_all_but_the_tail() {
    let classes: Vec<i64> = (0..1000).collect();
    let p = pack_batches(&classes, None, 64, 64, MAX_FAILED_POPS, 5).unwrap();
    assert_eq!(p.n_batches, 15);
    assert_eq!(p.dropped, 1000 - 15 * 64);
    let q = pack_batches(&classes, None, 64, 64, MAX_FAILED_POPS, 6).unwrap();
    assert_ne!(p.batches, q.batches, "the seed changes the order");
}

#[test]
fn requeued_pairs_are_not_lost() {
    // Class 0 holds half the pairs: met while class 0 is in the batch, they go back to the
    // queue, so the walk ends only when nothing but class-0 pairs (and the tail) is left.
    for seed in 0..20 {
        let classes: Vec<i64> = (0..200).map(|i| if i % 2 == 0 { 0 } else { i }).collect();
        let p = pack_batches(&classes, None, 2, 0, MAX_FAILED_POPS, seed).unwrap();
        check_invariants(&p, &classes, 2);
        let mut placed = vec![false; classes.len()];
        p.batches.iter().for_each(|&q| placed[q as usize] = true);
        let left_other = (0..200).filter(|&i| !placed[i] && classes[i] != 0).count();
        assert!(
            left_other <= 1,
            "seed {seed}: {left_other} single-class pairs left"
        );
        let zeros = p
            .batches
            .iter()
            .filter(|&&q| classes[q as usize] == 0)
            .count();
        assert!(
            zeros >= 40,
            "seed {seed}: only {zeros} class-0 pairs placed"
        );
    }
}

/// The walk's queue for this seed (its first draws).
fn queue(p: usize, seed: u64) -> Vec<u32> {
    let mut q: Vec<u32> = (0..p as u32).collect();
    SplitMix64::new(seed).shuffle(&mut q);
    q
}

#[test]
fn a_class_anchoring_again_has_lost_the_classes_it_pulled() {
    // A (pairs 0, 1) lists B (pairs 2, 3), C (4), D (5); E, F (6, 7) list nothing. Batches
    // of two, select 2 (one fixed, one random). The queue starts with A's two pairs.
    let classes = [0i64, 0, 1, 1, 2, 3, 4, 5];
    let seed = (0..).find(|&s| queue(8, s)[..2] == [0, 1]).unwrap();
    let run = |row: [i64; 3]| {
        let mut nb = vec![-1i64; 6 * 3];
        nb[..3].copy_from_slice(&row);
        let nbrs = Neighbours {
            data: &nb,
            rows: 6,
            width: 3,
        };
        let p = pack_batches(&classes, Some(nbrs), 2, 2, MAX_FAILED_POPS, seed).unwrap();
        check_invariants(&p, &classes, 2);
        p.batches
    };
    // First anchoring pulls a B pair and removes B: C moves up into the fixed half.
    let b = run([1, 2, 3]);
    assert!(b[0] == 0 && (b[1] == 2 || b[1] == 3), "{b:?}");
    assert_eq!(b[2..4], [1, 4]);
    // Only the first occurrence goes: listed twice, B stays first and gives its other pair.
    let b = run([1, 1, 2]);
    assert_eq!(b[2..4], [1, 5 - b[1]]);
}

#[test]
fn dropped_used_pairs_count_as_failed_pops() {
    // Classes 0..101 (one pair each) list each other, so the first popped pulls in the rest;
    // class 101 has 1000 pairs, class 102 one pair (w, last). One batch takes all 103.
    let (group, n_z) = (101usize, 1000usize);
    let classes: Vec<i64> = (0..group as i64)
        .chain(std::iter::repeat_n(group as i64, n_z))
        .chain([group as i64 + 1])
        .collect();
    let mut nb = vec![-1i64; (group + 2) * (group - 1)];
    for c in 0..group {
        let others = (0..group as i64).filter(|&o| o != c as i64);
        for (slot, o) in nb[c * (group - 1)..].iter_mut().zip(others) {
            *slot = o;
        }
    }
    let nbrs = Neighbours {
        data: &nb,
        rows: group + 2,
        width: group - 1,
    };
    let w = classes.len() as u32 - 1;
    // Pops between the last anchor (first group pair, or first class-101 pair) and w (0 when
    // w comes first): each is a used group pair (dropped) or a class-101 pair (put back,
    // fewer than 1000: counting only those, w would always be reached).
    let run_before_w = |q: &[u32]| {
        let pos = |f: &dyn Fn(u32) -> bool| q.iter().position(|&x| f(x)).unwrap();
        let last_anchor = pos(&|x| (x as usize) < group).max(pos(&|x| x as usize >= group));
        pos(&|x| x == w).saturating_sub(last_anchor + 1)
    };
    let mut stopped = 0;
    for seed in 0..1000u64 {
        let run = run_before_w(&queue(classes.len(), seed));
        let p = pack_batches(
            &classes,
            Some(nbrs),
            group + 2,
            2 * group,
            MAX_FAILED_POPS,
            seed,
        )
        .unwrap();
        // The walk ends before w exactly when those failed pops reach the limit.
        assert_eq!(
            p.n_batches,
            usize::from(run < MAX_FAILED_POPS),
            "seed {seed}, run {run}"
        );
        stopped += usize::from(run >= MAX_FAILED_POPS);
    }
    assert!(stopped >= 10, "only {stopped} seeds reach the limit");
}

#[test]
fn neighbours_fill_the_batch() {
    // Every class lists the next 7 classes: with select >= 7 an anchor fills its batch.
    let c = 64;
    let nb: Vec<i64> = (0..c)
        .flat_map(|a| (1..8).map(move |d| ((a + d) % c) as i64))
        .collect();
    let classes: Vec<i64> = (0..c as i64).collect();
    let p = pack_batches(
        &classes,
        Some(Neighbours {
            data: &nb,
            rows: c,
            width: 7,
        }),
        8,
        14,
        MAX_FAILED_POPS,
        3,
    )
    .unwrap();
    check_invariants(&p, &classes, 8);
    assert!(p.via_neighbour >= p.n_batches * 4, "{p:?}");
    // only padding: behaves like no neighbours
    let pad = vec![-1i64; c * 3];
    let q = pack_batches(
        &classes,
        Some(Neighbours {
            data: &pad,
            rows: c,
            width: 3,
        }),
        8,
        4,
        MAX_FAILED_POPS,
        3,
    )
    .unwrap();
    assert_eq!(
        q,
        pack_batches(&classes, None, 8, 4, MAX_FAILED_POPS, 3).unwrap()
    );
}

#[test]
fn sparse_class_ids_without_neighbours() {
    let sparse: Vec<i64> = (0..300).map(|i| (i % 100) * 1_000_000_000_000).collect();
    let dense: Vec<i64> = (0..300).map(|i| i % 100).collect();
    let a = pack_batches(&sparse, None, 10, 0, MAX_FAILED_POPS, 4).unwrap();
    assert_eq!(
        a,
        pack_batches(&dense, None, 10, 0, MAX_FAILED_POPS, 4).unwrap()
    );
    check_invariants(&a, &dense, 10);
    let neg = pack_batches(&[5_000_000, -7], None, 2, 0, MAX_FAILED_POPS, 0)
        .unwrap_err()
        .message()
        .to_string();
    assert!(neg.contains("pair_class[1] = -7"), "{neg}");
}

#[test]
fn bad_input_is_an_error() {
    let cls = [0i64, 1, 2, 3];
    let err = |c: &[i64], nb: Option<Neighbours>, bs| {
        pack_batches(c, nb, bs, 4, MAX_FAILED_POPS, 0)
            .unwrap_err()
            .message()
            .to_string()
    };
    assert!(err(&cls, None, 1).contains("at least 2"));
    assert!(err(&cls, None, 5).contains("larger than the number of classes"));
    assert!(err(&[], None, 2).contains("(0)"));
    assert!(err(&[0, -1], None, 2).contains("pair_class[1]"));
    let nb = [1i64, 2, 3, 0];
    let ok = Neighbours {
        data: &nb,
        rows: 4,
        width: 1,
    };
    assert!(err(&[0, 4], Some(ok), 2).contains("pair_class[1] = 4"));
    let bad = [1i64, 2, 7, -1];
    assert!(err(
        &cls,
        Some(Neighbours {
            data: &bad,
            rows: 4,
            width: 1
        }),
        2
    )
    .contains("neighbours[2, 0] = 7"));
    let short = Neighbours {
        data: &nb[..3],
        rows: 4,
        width: 1,
    };
    assert!(err(&cls, Some(short), 2).contains("rows*width"));
}
