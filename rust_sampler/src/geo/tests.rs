//! Unit tests of `geo` (kept beside the module to keep files short).
use super::*;
use crate::pack::SplitMix64;

fn brute(lat: &[f64], lon: &[f64], k: usize) -> (Vec<i64>, Vec<f64>) {
    let n = lat.len();
    let (mut idx, mut dist) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut row: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| {
                (
                    haversine_m(
                        lat[i],
                        lon[i],
                        cos_lat(lat[i]),
                        lat[j],
                        lon[j],
                        cos_lat(lat[j]),
                    ),
                    j,
                )
            })
            .collect();
        row.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(d, j) in row.iter().take(k) {
            idx.push(j as i64);
            dist.push(d);
        }
    }
    (idx, dist)
}

fn uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn pick(rng: &mut SplitMix64, options: &[f64]) -> f64 {
    options[rng.below(options.len() as u64) as usize]
}

fn assert_matches_brute(lat: &[f64], lon: &[f64], k: usize) {
    let got = gps_neighbours(lat, lon, k).expect("valid input");
    assert_eq!(got, brute(lat, lon, k), "n={} k={k}", lat.len());
}

#[test]
fn random_sets_equal_brute_force() {
    let mut rng = SplitMix64::new(7);
    for round in 0..60 {
        let n = 2 + rng.below(150) as usize;
        let k = 1 + rng.below(n as u64 - 1) as usize;
        let (lat, lon): (Vec<f64>, Vec<f64>) = (0..n)
            .map(|_| match round % 3 {
                0 => (
                    uniform(&mut rng, -90.0, 90.0),
                    uniform(&mut rng, -180.0, 180.0),
                ),
                // a dense city block: spacing of metres, many near-ties
                1 => (
                    40.0 + uniform(&mut rng, 0.0, 1e-3),
                    -74.0 + uniform(&mut rng, 0.0, 1e-3),
                ),
                _ => (
                    uniform(&mut rng, -1.0, 1.0),
                    pick(&mut rng, &[179.9999, -179.9999, 180.0, -180.0]),
                ),
            })
            .unzip();
        assert_matches_brute(&lat, &lon, k);
    }
}

#[test]
fn poles_antimeridian_and_duplicates() {
    let lat = [
        90.0, 90.0, 90.0, -90.0, -90.0, 0.0, 0.0, 0.0, 0.0, 45.0, 45.0, 45.0,
    ];
    let lon = [
        0.0, 120.0, -180.0, 10.0, 180.0, 180.0, -180.0, 179.999, -179.999, 7.0, 7.0, 7.0,
    ];
    for k in 1..lat.len() {
        assert_matches_brute(&lat, &lon, k);
    }
    let (idx, dist) = gps_neighbours(&lat, &lon, 2).unwrap();
    // lon 180 and -180 are one meridian: distance 0 both ways
    assert_eq!((idx[10], idx[12]), (6, 5));
    assert_eq!((dist[10], dist[12]), (0.0, 0.0));
    // exact duplicates come in index order, at distance 0
    assert_eq!(&idx[18..20], &[10, 11]);
    assert_eq!(&dist[18..20], &[0.0, 0.0]);
}

#[test]
fn many_duplicates_and_n_equals_k_plus_one() {
    let lat = vec![12.5; 40];
    let lon = vec![-3.25; 40];
    let (idx, dist) = gps_neighbours(&lat, &lon, 39).unwrap();
    assert!(dist.iter().all(|&d| d == 0.0));
    for i in 0..40usize {
        let expect: Vec<i64> = (0..40).filter(|&j| j != i as i64).collect();
        assert_eq!(&idx[i * 39..(i + 1) * 39], &expect[..]);
    }
    assert_matches_brute(&[0.0, 1.0], &[0.0, 1.0], 1);
}

#[test]
fn bucket_sort_equals_tuple_sort() {
    let mut rng = SplitMix64::new(5);
    for len in [0usize, 1, 2, 50, 256, 257, 600] {
        // distances that differ only in their lowest bits, plus exact ties
        let mut v: Vec<(u64, u32)> = (0..len as u32)
            .map(|j| match j % 3 {
                0 => (0x4059_0000_0000_0000 + rng.below(600) * 3, j),
                1 => (rng.below(3), j), // +0.0 and subnormals
                _ => ((uniform(&mut rng, 0.0, 500.0)).to_bits(), j),
            })
            .collect();
        rng.shuffle(&mut v);
        let mut want = v.clone();
        want.sort_unstable();
        let mut got = Vec::new();
        sort_by_distance_then_index(&v, &mut got, &mut Vec::new(), &mut Vec::new());
        assert_eq!(got, want, "len {len}");
    }
}

#[test]
fn large_tie_groups_and_large_k() {
    // 300 copies of one point among 400 others: candidate lists beyond 256 entries
    let mut rng = SplitMix64::new(9);
    let (mut lat, mut lon) = (vec![51.5; 300], vec![-0.12; 300]);
    for _ in 0..400 {
        lat.push(51.5 + uniform(&mut rng, -0.01, 0.01));
        lon.push(-0.12 + uniform(&mut rng, -0.01, 0.01));
    }
    assert_matches_brute(&lat, &lon, 320);
}

#[test]
fn polynomial_sine_is_accurate() {
    let mut rng = SplitMix64::new(2);
    let half_pi = std::f64::consts::FRAC_PI_2;
    let mut xs: Vec<f64> = (0..20_000)
        .map(|_| uniform(&mut rng, -half_pi, half_pi))
        .collect();
    xs.extend((0..2_000).map(|i| 1e-12 * i as f64)); // small angles: metres apart
    xs.extend([0.0, -0.0, half_pi, -half_pi, 1e-300, 5e-324]);
    for x in xs {
        let (got, want) = (sin_half_angle(x), x.sin());
        assert!(
            (got - want).abs() <= 3e-16 * want.abs(),
            "x={x:e}: {got:e} vs {want:e}"
        );
    }
}

#[test]
fn known_distance() {
    // one degree of arc on the equator = R * pi / 180
    let d = haversine_m(0.0, 0.0, 1.0, 0.0, 1.0, 1.0);
    assert!((d - EARTH_RADIUS_M * std::f64::consts::PI / 180.0).abs() < 1e-6);
    let anti = haversine_m(0.0, 0.0, 1.0, 0.0, 180.0, 1.0);
    assert!((anti - EARTH_RADIUS_M * std::f64::consts::PI).abs() < 1e-3);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let err = |lat: &[f64], lon: &[f64], k| {
        gps_neighbours(lat, lon, k)
            .unwrap_err()
            .message()
            .to_string()
    };
    assert!(err(&[], &[], 1).contains("smaller than the number of points (0)"));
    assert!(err(&[0.0, 1.0], &[0.0, 1.0], 2).contains("k must be smaller"));
    assert!(err(&[0.0, 1.0], &[0.0, 1.0], 0).contains("at least 1"));
    assert!(err(&[0.0, 1.0], &[0.0], 1).contains("differ in length"));
    assert!(err(&[0.0, f64::NAN], &[0.0, 1.0], 1).contains("row 1"));
    assert!(err(&[0.0, 1.0], &[f64::INFINITY, 1.0], 1).contains("finite"));
    assert!(err(&[0.0, 90.5], &[0.0, 1.0], 1).contains("latitude"));
    assert!(err(&[0.0, 1.0], &[-180.5, 1.0], 1).contains("longitude"));
}
