//! Where the windows of a token sequence start, and which are kept under the max-windows bound.

use std::ops::Range;

use crate::{Overflow, TokenizeError, WindowConfig};

/// Start offsets of overlapping windows of `width` tokens with step `width - overlap` covering
/// `len` tokens; the last window ends exactly at `len` (it may overlap its neighbour more).
/// An empty sequence has one (empty) window, so every text gets a vector.
pub fn window_starts(len: usize, width: usize, overlap: usize) -> Vec<usize> {
    if len <= width {
        return vec![0];
    }
    let step = width - overlap;
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * step)
        .take_while(|s| s + width < len)
        .collect();
    starts.push(len - width);
    starts
}

/// The windows of one token sequence after applying [`WindowConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    len: usize,
    width: usize,
    starts: Vec<usize>,
    skipped: usize,
}

impl WindowPlan {
    /// Plans windows over `len` content tokens.
    pub fn new(len: usize, config: &WindowConfig) -> Result<WindowPlan, TokenizeError> {
        let width = config.content_tokens();
        let all = window_starts(len, width, config.overlap);
        let needed = all.len();
        let max = config.max_windows;
        if needed <= max {
            return Ok(WindowPlan {
                len,
                width,
                starts: all,
                skipped: 0,
            });
        }
        match config.overflow {
            Overflow::Reject => Err(TokenizeError::TooManyWindows {
                needed,
                max_tokens: config.max_tokens,
                max_windows: max,
            }),
            Overflow::Sample => {
                // Evenly spaced picks; the first and the last window are always among them.
                let starts = if max == 1 {
                    vec![all[0]]
                } else {
                    (0..max)
                        .map(|i| all[(i * (needed - 1) + (max - 1) / 2) / (max - 1)])
                        .collect()
                };
                Ok(WindowPlan {
                    len,
                    width,
                    starts,
                    skipped: needed - max,
                })
            }
        }
    }

    /// Content-token ranges of the kept windows, in text order.
    pub fn ranges(&self) -> impl ExactSizeIterator<Item = Range<usize>> + '_ {
        self.starts
            .iter()
            .map(|&s| s..(s + self.width).min(self.len))
    }

    /// Windows left out.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(
        max_tokens: usize,
        overlap: usize,
        max_windows: usize,
        overflow: Overflow,
    ) -> WindowConfig {
        WindowConfig {
            max_tokens,
            overlap,
            max_windows,
            overflow,
        }
    }

    #[test]
    fn windows_cover_every_token_with_overlap() {
        for len in [0, 1, 9, 10, 11, 17, 100, 1001] {
            let starts = window_starts(len, 10, 3);
            let mut covered = vec![false; len];
            for &s in &starts {
                for c in covered.iter_mut().skip(s).take(10) {
                    *c = true;
                }
            }
            assert!(covered.iter().all(|c| *c), "len {len}: {starts:?}");
            assert_eq!(*starts.last().unwrap(), len.saturating_sub(10));
            assert!(
                starts.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 7),
                "{starts:?}"
            );
        }
    }

    #[test]
    fn sampling_keeps_first_and_last() {
        let plan = WindowPlan::new(10_000, &cfg(12, 2, 4, Overflow::Sample)).unwrap();
        let r: Vec<_> = plan.ranges().collect();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].start, 0);
        assert_eq!(r[3].end, 10_000);
        assert_eq!(plan.skipped(), window_starts(10_000, 10, 2).len() - 4);
        let one = WindowPlan::new(10_000, &cfg(12, 2, 1, Overflow::Sample)).unwrap();
        assert_eq!(one.ranges().count(), 1);
    }

    #[test]
    fn reject_reports_counts() {
        let err = WindowPlan::new(100, &cfg(12, 2, 2, Overflow::Reject)).unwrap_err();
        assert!(
            matches!(err, TokenizeError::TooManyWindows { max_windows: 2, .. }),
            "{err}"
        );
    }
}
