//! Exact k nearest neighbours on the sphere (haversine), for GPS-based hard negatives.
//!
//! Points become 3-D unit vectors: chord length orders pairs exactly like great-circle
//! distance, so an ordinary k-d tree finds candidates. Chord lengths computed in floating
//! point are, however, only accurate to ~1e-15 in absolute terms, while the reported
//! haversine distances of close points are accurate relatively; so the search keeps every
//! point within the k-th chord plus a small slack, and the final order is decided on the
//! haversine distance itself, ties by lower index. That makes the result equal to a brute
//! force sort by (haversine metres, index) computed with the same formula.

use rayon::prelude::*;

use crate::error::{bail, SamplerError};

/// Mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;
const DEG_TO_RAD: f64 = std::f64::consts::PI / 180.0;
const HALF_DEG_TO_RAD: f64 = std::f64::consts::PI / 360.0;
const LEAF_SIZE: usize = 16;
const NO_CHILD: u32 = u32::MAX;
/// Queries per parallel task (in tree order).
const QUERY_CHUNK: usize = 512;
// Chord errors are ~1e-15; the slack is far wider so rounding never drops a true neighbour,
// and far narrower (6e-5 m) than any real spacing so it costs almost nothing.
const SLACK_REL: f64 = 1e-9;
const SLACK_ABS: f64 = 1e-11;

/// Haversine distance in metres between (lat1, lon1) and (lat2, lon2) in degrees;
/// `cos1`/`cos2` are the cosines of the latitudes (precomputed per point).
///
/// Differences are taken in degrees before converting, so close points keep full relative
/// precision. The central angle is 2·asin(√a) up to 90° (cheaper) and the atan2 form beyond,
/// which stays accurate up to antipodal pairs. This exact sequence of operations is the
/// library's definition of distance: tests/reference.py repeats it.
#[inline]
pub fn haversine_m(lat1: f64, lon1: f64, cos1: f64, lat2: f64, lon2: f64, cos2: f64) -> f64 {
    let mut dlon = lon2 - lon1;
    if dlon > 180.0 {
        dlon -= 360.0;
    } else if dlon < -180.0 {
        dlon += 360.0;
    }
    let s_lat = ((lat2 - lat1) * HALF_DEG_TO_RAD).sin();
    let s_lon = (dlon * HALF_DEG_TO_RAD).sin();
    let a = (s_lat * s_lat + cos1 * cos2 * (s_lon * s_lon)).min(1.0);
    let half_angle = if a <= 0.5 {
        a.sqrt().asin()
    } else {
        a.sqrt().atan2((1.0 - a).sqrt())
    };
    2.0 * EARTH_RADIUS_M * half_angle
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

struct Node {
    lo: u32,
    hi: u32,
    left: u32,
    right: u32,
    bmin: [f64; 3],
    bmax: [f64; 3],
}

/// k-d tree over unit vectors; `pts[p]` is the point with original index `ids[p]`.
struct Tree {
    pts: Vec<[f64; 3]>,
    ids: Vec<u32>,
    nodes: Vec<Node>,
}

#[inline]
fn dist2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let (x, y, z) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
    x * x + y * y + z * z
}

#[inline]
fn box_dist2(q: &[f64; 3], n: &Node) -> f64 {
    let mut s = 0.0;
    for ((&lo, &hi), &x) in n.bmin.iter().zip(&n.bmax).zip(q) {
        let e = (lo - x).max(0.0) + (x - hi).max(0.0);
        s += e * e;
    }
    s
}

impl Tree {
    fn build(points: Vec<[f64; 3]>) -> Tree {
        let mut ids: Vec<u32> = (0..points.len() as u32).collect();
        let mut nodes = Vec::with_capacity(2 * points.len() / LEAF_SIZE + 2);
        Self::build_node(&points, &mut ids, 0, &mut nodes);
        let pts = ids.iter().map(|&i| points[i as usize]).collect();
        Tree { pts, ids, nodes }
    }

    /// Build the subtree over `ids` (which start at position `lo`); returns its node index.
    fn build_node(points: &[[f64; 3]], ids: &mut [u32], lo: usize, nodes: &mut Vec<Node>) -> u32 {
        let (mut bmin, mut bmax) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        for &i in ids.iter() {
            let p = &points[i as usize];
            for d in 0..3 {
                bmin[d] = bmin[d].min(p[d]);
                bmax[d] = bmax[d].max(p[d]);
            }
        }
        let me = nodes.len() as u32;
        let (lo32, hi32) = (lo as u32, (lo + ids.len()) as u32);
        nodes.push(Node {
            lo: lo32,
            hi: hi32,
            left: NO_CHILD,
            right: NO_CHILD,
            bmin,
            bmax,
        });
        if ids.len() <= LEAF_SIZE {
            return me;
        }
        let dim = (0..3)
            .max_by(|&a, &b| (bmax[a] - bmin[a]).total_cmp(&(bmax[b] - bmin[b])))
            .unwrap_or(0);
        let mid = ids.len() / 2;
        ids.select_nth_unstable_by(mid, |&a, &b| {
            points[a as usize][dim].total_cmp(&points[b as usize][dim])
        });
        let (left_ids, right_ids) = ids.split_at_mut(mid);
        let left = Self::build_node(points, left_ids, lo, nodes);
        let right = Self::build_node(points, right_ids, lo + mid, nodes);
        nodes[me as usize].left = left;
        nodes[me as usize].right = right;
        me
    }

    /// Every point other than `qi` whose chord to `q` is within the k-th smallest chord
    /// plus slack, as (chord², index) in `s.cand`; returns the k-th smallest chord².
    ///
    /// `start2` is an upper bound on (k-th chord + slack)² known beforehand (or infinity);
    /// a good one lets the search prune from the first leaf on.
    fn candidates(&self, qi: u32, q: &[f64; 3], k: usize, start2: f64, s: &mut Scratch) -> f64 {
        s.cand.clear();
        s.stack.clear();
        s.stack.push((0, 0.0));
        let mut bound2 = start2;
        let mut shrink_at = (2 * k).max(32);
        while let Some((ni, md2)) = s.stack.pop() {
            if md2 > bound2 {
                continue;
            }
            let node = &self.nodes[ni as usize];
            if node.left == NO_CHILD {
                for p in node.lo as usize..node.hi as usize {
                    let d2 = dist2(q, &self.pts[p]);
                    if d2 <= bound2 && self.ids[p] != qi {
                        s.cand.push((d2, self.ids[p]));
                    }
                }
                if s.cand.len() >= shrink_at {
                    bound2 = slack_bound2(shrink(&mut s.cand, k));
                    // Doubling keeps the work amortised when many points tie within slack.
                    shrink_at = shrink_at.max(2 * s.cand.len());
                }
            } else {
                let (l, r) = (node.left, node.right);
                let dl = box_dist2(q, &self.nodes[l as usize]);
                let dr = box_dist2(q, &self.nodes[r as usize]);
                if dl <= dr {
                    s.stack.push((r, dr));
                    s.stack.push((l, dl));
                } else {
                    s.stack.push((l, dl));
                    s.stack.push((r, dr));
                }
            }
        }
        if s.cand.len() < k {
            // Only if rounding made the start bound too tight: search again without it.
            return self.candidates(qi, q, k, f64::INFINITY, s);
        }
        shrink(&mut s.cand, k)
    }
}

/// (chord + slack)² for a chord²: everything a rounding error could put within the chord.
#[inline]
fn slack_bound2(chord2: f64) -> f64 {
    let b = chord2.sqrt() * (1.0 + SLACK_REL) + SLACK_ABS;
    b * b
}

/// Keep the k smallest chords and everything within slack of the k-th; returns the k-th
/// chord². `cand` holds at least k entries.
fn shrink(cand: &mut Vec<(f64, u32)>, k: usize) -> f64 {
    cand.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
    let kth2 = cand[k - 1].0;
    let bound2 = slack_bound2(kth2);
    cand.retain(|c| c.0 <= bound2);
    kth2
}

/// Output rows addressed by point index from parallel tasks.
struct Rows<T> {
    ptr: *mut T,
    k: usize,
}

// SAFETY: tasks only reach rows through `row`, whose contract gives each task its own rows.
unsafe impl<T: Send> Sync for Rows<T> {}

impl<T> Rows<T> {
    /// # Safety
    /// `i` < the row count of the buffer, and no two live borrows may share an `i`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, i: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.ptr.add(i * self.k), self.k)
    }
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
    stack: Vec<(u32, f64)>,
    cand: Vec<(f64, u32)>,
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
    let idx_rows = Rows {
        ptr: idx.as_mut_ptr(),
        k,
    };
    let dist_rows = Rows {
        ptr: dist.as_mut_ptr(),
        k,
    };
    // Queries run in tree order, so consecutive queries are close: the previous query's k-th
    // chord plus the step between them bounds the next one's (triangle inequality), and the
    // search prunes from its first leaf on.
    let chunks = tree.ids.par_chunks(QUERY_CHUNK).enumerate();
    chunks.for_each_init(Scratch::default, |s, (c, ids)| {
        let mut prev: Option<(&[f64; 3], f64)> = None;
        for (o, &qi) in ids.iter().enumerate() {
            let q = &tree.pts[c * QUERY_CHUNK + o];
            let start2 = prev.map_or(f64::INFINITY, |(p, kth2)| {
                let b = dist2(q, p).sqrt() + kth2.sqrt();
                slack_bound2(b * b)
            });
            prev = Some((q, tree.candidates(qi, q, k, start2, s)));
            let i = qi as usize;
            s.ranked.clear();
            let (lat, lon, c) = (lat_deg[i], lon_deg[i], cos[i]);
            s.ranked.extend(s.cand.iter().map(|&(_, j)| {
                let j_ = j as usize;
                let d = haversine_m(lat, lon, c, lat_deg[j_], lon_deg[j_], cos[j_]);
                (d.to_bits(), j)
            }));
            sort_by_distance_then_index(&s.ranked, &mut s.sorted, &mut s.bucket, &mut s.start);
            // SAFETY: `tree.ids` is a permutation of 0..n split into disjoint chunks, so row
            // i (< n) is written by this task only.
            let (idx_row, dist_row) = unsafe { (idx_rows.row(i), dist_rows.row(i)) };
            for (t, &(bits, j)) in s.sorted.iter().take(k).enumerate() {
                idx_row[t] = j as i64;
                dist_row[t] = f64::from_bits(bits);
            }
        }
    });
    Ok((idx, dist))
}

#[cfg(test)]
mod tests;
