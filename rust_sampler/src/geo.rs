//! Exact k nearest neighbours on the sphere (haversine), for GPS-based hard negatives.
//!
//! Points become 3-D unit vectors: chord length orders pairs exactly like great-circle
//! distance, so an ordinary k-d tree finds candidates. Chord lengths computed in floating
//! point are, however, only accurate to ~1e-15 in absolute terms, while the reported
//! haversine distances of close points are accurate relatively; so the search keeps every
//! point within the k-th chord plus a small slack, and the final order is decided on the
//! haversine distance itself, ties by lower index. That makes the result equal to a brute
//! force sort by (haversine metres, index) computed with the same formula.
//!
//! Queries run in tree order, in parallel chunks (rayon); each starts from a bound derived
//! from its predecessor. The haversine's sines are a Taylor polynomial (exact to ~1 ulp on
//! the half-angles it sees): plain arithmetic, so its bits are the same everywhere.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use rayon::prelude::*;

use crate::error::{bail, SamplerError};

mod kdtree;
use kdtree::{dist2, slack_bound2, Search, Tree};

/// Mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;
const DEG_TO_RAD: f64 = std::f64::consts::PI / 180.0;
const HALF_DEG_TO_RAD: f64 = std::f64::consts::PI / 360.0;
/// Queries per parallel task (in tree order).
const QUERY_CHUNK: usize = 512;

/// Taylor coefficients (-1)^m / (2m+1)! of sin, m = 10 down to 1 (exact f64 literals, so
/// tests/reference.py can repeat them bit for bit).
const SIN_COEFFS: [f64; 10] = [
    1.9572941063391263e-20,
    -8.22063524662433e-18,
    2.8114572543455206e-15,
    -7.647163731819816e-13,
    1.6059043836821613e-10,
    -2.505210838544172e-08,
    2.7557319223985893e-06,
    -0.0001984126984126984,
    0.008333333333333333,
    -0.16666666666666666,
];

/// sin(x) for |x| <= pi/2 (the half-angles of the haversine): the Taylor series to x^21,
/// whose truncation error there is below 2e-18, by Horner's rule. Plain arithmetic, unlike
/// libm: the same bits on every platform, and the compiler can vectorise it.
#[inline(always)]
pub fn sin_half_angle(x: f64) -> f64 {
    let x2 = x * x;
    let mut p = SIN_COEFFS[0];
    for &c in &SIN_COEFFS[1..] {
        p = p * x2 + c;
    }
    x + x * (x2 * p)
}

/// The haversine of the central angle, sin²(θ/2), between (lat1, lon1) and (lat2, lon2) in
/// degrees; `cos1`/`cos2` are the cosines of the latitudes (precomputed per point).
/// Differences are taken in degrees before converting, so close points keep full relative
/// precision.
#[inline(always)]
pub fn haversine_a(lat1: f64, lon1: f64, cos1: f64, lat2: f64, lon2: f64, cos2: f64) -> f64 {
    let dlon = lon2 - lon1;
    let dlon = if dlon > 180.0 {
        dlon - 360.0
    } else if dlon < -180.0 {
        dlon + 360.0
    } else {
        dlon
    };
    let s_lat = sin_half_angle((lat2 - lat1) * HALF_DEG_TO_RAD);
    let s_lon = sin_half_angle(dlon * HALF_DEG_TO_RAD);
    (s_lat * s_lat + cos1 * cos2 * (s_lon * s_lon)).min(1.0)
}

/// Metres for a haversine `a`: 2R·asin(√a) up to 90° (cheap, accurate), the atan2 form
/// beyond (accurate up to antipodal points).
#[inline]
pub fn metres_from_a(a: f64) -> f64 {
    let half_angle = if a <= 0.5 {
        a.sqrt().asin()
    } else {
        a.sqrt().atan2((1.0 - a).sqrt())
    };
    2.0 * EARTH_RADIUS_M * half_angle
}

/// Haversine distance in metres: `metres_from_a(haversine_a(..))`. This exact sequence of
/// operations is the library's definition of distance; tests/reference.py repeats it.
#[inline]
pub fn haversine_m(lat1: f64, lon1: f64, cos1: f64, lat2: f64, lon2: f64, cos2: f64) -> f64 {
    metres_from_a(haversine_a(lat1, lon1, cos1, lat2, lon2, cos2))
}

/// Cosine of a latitude in degrees, as used by [`haversine_m`].
#[inline]
pub fn cos_lat(lat_deg: f64) -> f64 {
    (lat_deg * DEG_TO_RAD).cos()
}

/// Check coordinates and k; the message names the argument and the first bad row.
pub fn validate(lat_deg: &[f64], lon_deg: &[f64], k: usize) -> Result<(), SamplerError> {
    if lat_deg.len() != lon_deg.len() {
        bail!(
            "lat_deg and lon_deg differ in length ({} vs {})",
            lat_deg.len(),
            lon_deg.len()
        );
    }
    let n = lat_deg.len();
    if k < 1 {
        bail!("k must be at least 1, got {k}");
    }
    if k >= n {
        bail!("k must be smaller than the number of points ({n}), got k={k}");
    }
    if n > u32::MAX as usize {
        bail!("at most {} points are supported, got {n}", u32::MAX);
    }
    for (i, (&lat, &lon)) in lat_deg.iter().zip(lon_deg).enumerate() {
        if !lat.is_finite() || !lon.is_finite() {
            bail!("coordinates must be finite; row {i} has lat={lat}, lon={lon}");
        }
        if lat.abs() > 90.0 {
            bail!("latitude must lie in [-90, 90] degrees; row {i} has {lat}");
        }
        if lon.abs() > 180.0 {
            bail!("longitude must lie in [-180, 180] degrees; row {i} has {lon}");
        }
    }
    Ok(())
}

/// Sort (distance bits, index) pairs by distance, then index, into `out`. Distances are
/// >= +0.0, so ordering their bits as integers is numeric order.
///
/// A counting sort on d² scaled to [0, len) buckets (monotone in d, so buckets are already
/// in order; neighbours in 2-D spread evenly over d²), then each bucket sorted exactly.
/// `bucket` and `start` are scratch; no allocation once warm.
fn sort_by_distance_then_index(
    v: &[(u64, u32)],
    out: &mut Vec<(u64, u32)>,
    bucket: &mut Vec<u32>,
    start: &mut Vec<u32>,
) {
    out.clear();
    let n = v.len();
    let dmax = v.iter().map(|e| f64::from_bits(e.0)).fold(0.0, f64::max);
    let scale = n as f64 / (dmax * dmax);
    if n < 32 || !scale.is_finite() {
        out.extend_from_slice(v);
        out.sort_unstable();
        return;
    }
    bucket.clear();
    bucket.extend(v.iter().map(|e| {
        let d = f64::from_bits(e.0);
        (((d * d) * scale) as usize).min(n - 1) as u32
    }));
    start.clear();
    start.resize(n + 1, 0);
    for &b in bucket.iter() {
        start[b as usize + 1] += 1;
    }
    for b in 0..n {
        start[b + 1] += start[b];
    }
    out.resize(n, (0, 0));
    for (e, &b) in v.iter().zip(bucket.iter()) {
        out[start[b as usize] as usize] = *e;
        start[b as usize] += 1;
    }
    // start[b] is now the end of bucket b (and the start of b + 1).
    let mut lo = 0;
    for &hi in &start[..n] {
        let hi = hi as usize;
        match hi - lo {
            0 | 1 => {}
            2 => {
                if out[lo] > out[lo + 1] {
                    out.swap(lo, lo + 1);
                }
            }
            _ => out[lo..hi].sort_unstable(),
        }
        lo = hi;
    }
}

#[derive(Default)]
struct Scratch {
    search: Search,
    /// haversine `a` of each candidate
    hav: Vec<f64>,
    /// (distance bits, index) of the candidates, then the same sorted.
    ranked: Vec<(u64, u32)>,
    sorted: Vec<(u64, u32)>,
    bucket: Vec<u32>,
    start: Vec<u32>,
}

/// The k nearest other points of every point, nearest first, ties by lower index.
///
/// `lat_deg`, `lon_deg`: (N,) degrees. Returns row-major (N·k) indices and haversine
/// distances in metres. Work O(N log N) for spread-out points, memory O(N·k); rows are
/// computed in parallel (rayon).
pub fn gps_neighbours(
    lat_deg: &[f64],
    lon_deg: &[f64],
    k: usize,
) -> Result<(Vec<i64>, Vec<f64>), SamplerError> {
    validate(lat_deg, lon_deg, k)?;
    let n = lat_deg.len();
    let cos: Vec<f64> = lat_deg.iter().map(|&l| cos_lat(l)).collect();
    let points: Vec<[f64; 3]> = (0..n)
        .map(|i| {
            let (slat, clat) = (lat_deg[i] * DEG_TO_RAD).sin_cos();
            let (slon, clon) = (lon_deg[i] * DEG_TO_RAD).sin_cos();
            [clat * clon, clat * slon, slat]
        })
        .collect();
    let tree = Tree::build(points);
    let mut idx = vec![0i64; n * k];
    let mut dist = vec![0f64; n * k];
    // Queries run in tree order but write rows in point order: the output rows, borrowed one
    // by one, are reordered into tree order so each parallel task owns the rows it writes.
    let mut by_point: Vec<Option<(&mut [i64], &mut [f64])>> = idx
        .chunks_mut(k)
        .zip(dist.chunks_mut(k))
        .map(Some)
        .collect();
    let mut rows: Vec<(&mut [i64], &mut [f64])> = Vec::with_capacity(n);
    for &qi in &tree.ids {
        match by_point[qi as usize].take() {
            Some(row) => rows.push(row),
            None => {
                return Err(SamplerError::Internal(format!(
                    "the k-d tree lists point {qi} twice"
                )))
            }
        }
    }
    drop(by_point);
    // Consecutive queries are close: the previous query's k-th chord plus the step between
    // them bounds the next one's (triangle inequality), and the search prunes from its first
    // leaf on.
    let short = AtomicBool::new(false);
    let queries = tree.ids.par_chunks(QUERY_CHUNK);
    let chunks = queries.zip(rows.par_chunks_mut(QUERY_CHUNK)).enumerate();
    chunks.for_each_init(Scratch::default, |s, (c, (ids, out))| {
        let mut prev: Option<(&[f64; 3], f64)> = None;
        for (o, &qi) in ids.iter().enumerate() {
            let q = &tree.pts[c * QUERY_CHUNK + o];
            let start2 = prev.map_or(f64::INFINITY, |(p, kth2)| {
                let b = dist2(q, p).sqrt() + kth2.sqrt();
                slack_bound2(b * b)
            });
            prev = Some((q, tree.candidates(qi, q, k, start2, &mut s.search)));
            let i = qi as usize;
            // Two passes: plain arithmetic first (vectorisable), then the libm part.
            let (lat, lon, c) = (lat_deg[i], lon_deg[i], cos[i]);
            s.hav.clear();
            s.hav.extend(s.search.cand.iter().map(|&(_, j)| {
                let j = j as usize;
                haversine_a(lat, lon, c, lat_deg[j], lon_deg[j], cos[j])
            }));
            s.ranked.clear();
            let pairs = s.search.cand.iter().zip(&s.hav);
            s.ranked
                .extend(pairs.map(|(&(_, j), &a)| (metres_from_a(a).to_bits(), j)));
            sort_by_distance_then_index(&s.ranked, &mut s.sorted, &mut s.bucket, &mut s.start);
            if s.sorted.len() < k {
                short.store(true, AtomicOrdering::Relaxed);
                continue;
            }
            let (idx_row, dist_row) = &mut out[o];
            for (t, &(bits, j)) in s.sorted.iter().take(k).enumerate() {
                idx_row[t] = j as i64;
                dist_row[t] = f64::from_bits(bits);
            }
        }
    });
    if short.into_inner() {
        // The search bound guarantees k candidates (k < n); fewer means a broken invariant.
        return Err(SamplerError::Internal(format!(
            "the k-d tree search returned fewer than k = {k} candidates for some point"
        )));
    }
    Ok((idx, dist))
}

#[cfg(test)]
mod tests;
