//! Mapping raw guard scores to finding scores calibrated on benign text.

use serde::{Deserialize, Serialize};

/// Finding score at the flag threshold (the core policy's default `flag_at`).
pub const FLAG_SCORE: f32 = 0.5;
/// Finding score at the block threshold (the core policy's default `block_at`).
pub const BLOCK_SCORE: f32 = 0.8;

/// Two raw-score cut points: `flag_raw` is exceeded by `flag_fpr` of the benign calibration texts,
/// `block_raw` by `block_fpr`. Scores map linearly through (flag_raw, 0.5) and (block_raw, 0.8),
/// clamped to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub flag_raw: f32,
    pub block_raw: f32,
    /// Benign false-positive rate at `flag_raw` on the calibration texts, in [0, 1].
    pub flag_fpr: f32,
    /// Benign false-positive rate at `block_raw` on the calibration texts, in [0, 1].
    pub block_fpr: f32,
    /// How many benign texts the cut points were fitted on.
    pub benign: usize,
}

impl Calibration {
    /// Fits cut points so that at most `block_fpr` (resp. `flag_fpr`) of `benign_raw` reach them.
    /// With few benign texts the block cut lies just above the highest benign score.
    pub fn fit(benign_raw: &[f32], flag_fpr: f32, block_fpr: f32) -> Option<Calibration> {
        if benign_raw.is_empty() {
            return None;
        }
        let mut s: Vec<f32> = benign_raw
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        s.sort_by(|a, b| b.total_cmp(a));
        let cut = |fpr: f32| {
            // Allowed benign hits at this rate; the cut sits just above the next-highest score.
            let allowed = ((s.len() as f32) * fpr).floor() as usize;
            s.get(allowed).map_or(f32::NEG_INFINITY, |x| x + 1e-4)
        };
        let block_raw = cut(block_fpr);
        let flag_raw = cut(flag_fpr).min(block_raw - 1e-3);
        Some(Calibration {
            flag_raw,
            block_raw,
            flag_fpr,
            block_fpr,
            benign: s.len(),
        })
    }

    /// Finding score of a raw score.
    pub fn score(&self, raw: f32) -> f32 {
        let span = (self.block_raw - self.flag_raw).max(1e-6);
        let t = (raw - self.flag_raw) / span;
        (FLAG_SCORE + t * (BLOCK_SCORE - FLAG_SCORE)).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitted_cuts_hit_the_rates() {
        let benign: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let c = Calibration::fit(&benign, 0.05, 0.01).unwrap();
        let over = |cut: f32| benign.iter().filter(|x| **x >= cut).count();
        assert!(over(c.block_raw) <= 10);
        assert!(over(c.flag_raw) <= 50 && over(c.flag_raw) > 10);
        assert!((c.score(c.block_raw) - BLOCK_SCORE).abs() < 1e-4);
        assert!((c.score(c.flag_raw) - FLAG_SCORE).abs() < 1e-4);
        assert!(c.score(-5.0) == 0.0 && c.score(5.0) == 1.0);
        assert!(Calibration::fit(&[], 0.05, 0.01).is_none());
    }
}
