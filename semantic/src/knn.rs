//! Class-conditional k-nearest-neighbour scoring over unit vectors.

/// Scores a query by how much closer it is to its nearest attack exemplars than to its nearest
/// benign ones: for each class the mean cosine of its `k` most similar exemplars; the raw score
/// is the best attack class's mean minus the benign mean (in [-2, 2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnnScorer {
    /// Neighbours per class (at least 1).
    pub k: usize,
}

/// A query's raw score and the attack class that produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnScore {
    pub raw: f32,
    /// Index of the best attack class (never 0, the benign class), or 0 when the bank has none.
    pub class: usize,
}

impl KnnScorer {
    /// Scores `q` against `exemplars` (`labels.len()` rows of `q.len()` values). Rows for which
    /// `skip(row)` is true are ignored (leave-one-out and cross-validation).
    pub fn score(
        &self,
        exemplars: &[f32],
        labels: &[u16],
        classes: usize,
        q: &[f32],
        skip: impl Fn(usize) -> bool,
    ) -> KnnScore {
        // `k` comes from a bank file (untrusted): more neighbours than exemplars means all of them.
        let k = self.k.clamp(1, labels.len().max(1));
        let dim = q.len();
        // Top-k per class kept as small sorted vectors (k is small).
        let mut top: Vec<Vec<f32>> = vec![Vec::with_capacity(k + 1); classes];
        for (row, (e, &l)) in exemplars.chunks_exact(dim).zip(labels).enumerate() {
            if skip(row) {
                continue;
            }
            let s = dot(e, q);
            let t = &mut top[l as usize];
            if t.len() < k || s > t[t.len() - 1] {
                let at = t.partition_point(|x| *x >= s);
                t.insert(at, s);
                t.truncate(k);
            }
        }
        let mean = |t: &Vec<f32>| {
            if t.is_empty() {
                f32::NAN
            } else {
                t.iter().sum::<f32>() / t.len() as f32
            }
        };
        let benign = mean(&top[0]);
        let benign = if benign.is_nan() { 0.0 } else { benign };
        let mut best = KnnScore {
            raw: -2.0,
            class: 0,
        };
        for (c, t) in top.iter().enumerate().skip(1) {
            let m = mean(t);
            if !m.is_nan() && m - benign > best.raw {
                best = KnnScore {
                    raw: m - benign,
                    class: c,
                };
            }
        }
        best
    }
}

/// Dot product; written over fixed-size chunks so the compiler vectorizes it.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {

    #[test]
    fn huge_k_from_a_bank_file_means_every_exemplar() {
        let ex = [1.0, 0.0, 0.0, 1.0];
        let huge = KnnScorer { k: usize::MAX }.score(&ex, &[0, 1], 2, &[0.0, 1.0], |_| false);
        let all = KnnScorer { k: 2 }.score(&ex, &[0, 1], 2, &[0.0, 1.0], |_| false);
        assert_eq!(huge, all);
    }

    use super::*;

    #[test]
    fn closer_to_attacks_scores_higher() {
        // 2-d unit vectors: benign near (1,0), attacks near (0,1).
        let ex = [1.0, 0.0, 0.9, 0.436, 0.0, 1.0, 0.436, 0.9];
        let labels = [0u16, 0, 1, 1];
        let s = KnnScorer { k: 2 };
        let a = s.score(&ex, &labels, 2, &[0.0, 1.0], |_| false);
        let b = s.score(&ex, &labels, 2, &[1.0, 0.0], |_| false);
        assert!(a.raw > 0.0 && b.raw < 0.0 && a.class == 1);
        let skipped = s.score(&ex, &labels, 2, &[0.0, 1.0], |r| r >= 2);
        assert_eq!(skipped.class, 0);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
