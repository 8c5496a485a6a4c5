//! The k-d tree over 3-D unit vectors behind `geo::gps_neighbours`: candidate search by
//! chord length with a slack that absorbs rounding (see the parent module's docs).

const LEAF_SIZE: usize = 16;
const NO_CHILD: u32 = u32::MAX;
// Chord errors are ~1e-15; the slack is far wider so rounding never drops a true neighbour,
// and far narrower (6e-5 m) than any real spacing so it costs almost nothing.
const SLACK_REL: f64 = 1e-9;
const SLACK_ABS: f64 = 1e-11;

/// Reusable buffers of one search: the node stack and the candidates (chord², index).
#[derive(Default)]
pub(super) struct Search {
    stack: Vec<(u32, f64)>,
    pub(super) cand: Vec<(f64, u32)>,
}

pub(super) struct Node {
    lo: u32,
    hi: u32,
    left: u32,
    right: u32,
    bmin: [f64; 3],
    bmax: [f64; 3],
}

/// k-d tree over unit vectors; `pts[p]` is the point with original index `ids[p]`.
pub(super) struct Tree {
    pub(super) pts: Vec<[f64; 3]>,
    pub(super) ids: Vec<u32>,
    nodes: Vec<Node>,
}

#[inline]
pub(super) fn dist2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
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
    pub(super) fn build(points: Vec<[f64; 3]>) -> Tree {
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
    pub(super) fn candidates(
        &self,
        qi: u32,
        q: &[f64; 3],
        k: usize,
        start2: f64,
        s: &mut Search,
    ) -> f64 {
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
pub(super) fn slack_bound2(chord2: f64) -> f64 {
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
