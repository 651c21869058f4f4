//! The pattern guard: windows the input, builds the views (raw, normalized, deobfuscated, decoded)
//! and runs the compiled rule pack over each.

use std::sync::{Arc, OnceLock};

use regex_automata::util::pool::Pool;
use serde::{Deserialize, Serialize};

use crate::decode::{self, Encoding};
use crate::deobfuscate::deobfuscate;
use crate::engine::{MatchScratch, RuleSet};
use crate::guard::{Guard, GuardError, Input};
use crate::normalize::normalize_into;
use crate::verdict::{Finding, Span};
use crate::view::{Mapping, View};

/// Bounds on the work one scan does. Long input is scanned in windows, never truncated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanLimits {
    /// Window size in bytes for long inputs (at least 1 KiB; rounded to char boundaries).
    pub window_bytes: usize,
    /// Overlap between consecutive windows in bytes: the longest match guaranteed across an edge.
    pub window_overlap: usize,
    /// How many times decoded text is itself decoded again (base64 inside hex...), 0 disables decoding.
    pub decode_depth: u8,
    /// Most decoded bytes rescanned per input, across all segments and depths.
    pub max_decoded_bytes: usize,
    /// Most threads one scan of a long input runs its windows on (0: one per available core,
    /// 1: the calling thread only). Each thread gets at least `PARALLEL_MIN_BYTES` (128 KiB) of
    /// text; the findings are the same for every setting.
    pub threads: usize,
}

/// Fewest bytes of input per thread of a parallel scan: below, a thread costs more than it saves.
pub const PARALLEL_MIN_BYTES: usize = 128 * 1024;

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            window_bytes: 16 * 1024,
            window_overlap: 1024,
            decode_depth: 2,
            max_decoded_bytes: 256 * 1024,
            threads: 0,
        }
    }
}

impl ScanLimits {
    fn sanitized(&self) -> ScanLimits {
        let window = self.window_bytes.max(1024);
        ScanLimits {
            window_bytes: window,
            window_overlap: self.window_overlap.min(window / 2),
            ..self.clone()
        }
    }
}

/// Per-thread scratch space reused across scans so clean input does not allocate.
struct Scratch {
    raw: View,
    folded: View,
    deobf: View,
    decoded: View,
    tmp: Vec<u8>,
    decode_buf: Vec<u8>,
    hits_raw: MatchScratch,
    hits_norm: MatchScratch,
}

type ScratchFn =
    Box<dyn Fn() -> Scratch + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// The pattern guard: a compiled rule pack plus scan limits.
pub struct PatternGuard {
    name: Arc<str>,
    rules: RuleSet,
    limits: ScanLimits,
    pool: Pool<Scratch, ScratchFn>,
    /// Cores available to this process, read at the first long scan (it reads cgroup files).
    cores: OnceLock<usize>,
}

impl std::fmt::Debug for PatternGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternGuard")
            .field("rules", &self.rules)
            .field("limits", &self.limits)
            .finish()
    }
}

/// One window scanned on a worker thread: its views' findings, and its decoded segments unless
/// the thread had already kept a budget's worth of decoded text (then `None`: decode again).
struct Scanned {
    views: Vec<Finding>,
    segments: Option<Vec<Segment>>,
}

/// A decoded segment waiting to be rescanned.
struct Segment {
    span: Span,
    encoding: Encoding,
    text: String,
}

impl PatternGuard {
    pub const NAME: &'static str = "patterns";

    pub fn new(rules: RuleSet, limits: ScanLimits) -> PatternGuard {
        let raw_scratch = rules.raw().scratch_factory();
        let norm_scratch = rules.normalized().scratch_factory();
        let make: ScratchFn = Box::new(move || Scratch {
            raw: View::default(),
            folded: View::default(),
            deobf: View::default(),
            decoded: View::default(),
            tmp: Vec::new(),
            decode_buf: Vec::new(),
            hits_raw: raw_scratch(),
            hits_norm: norm_scratch(),
        });
        PatternGuard {
            name: Arc::from(Self::NAME),
            rules,
            limits: limits.sanitized(),
            pool: Pool::new(make),
            cores: OnceLock::new(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn limits(&self) -> &ScanLimits {
        &self.limits
    }

    /// All findings for `text`, sorted by start offset then rule id, without duplicates.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let threads = self.threads_for(text.len());
        let mut out = if threads > 1 {
            self.find_parallel(text, threads)
        } else {
            let mut out = Vec::new();
            let mut scratch = self.pool.get();
            let mut decoded_budget = self.limits.max_decoded_bytes;
            for (base, window) in self.windows(text) {
                self.scan_views(window, base, &mut scratch, &mut out);
                let segments = self.segments(window, base, &mut scratch);
                self.scan_segments(segments, 1, &mut scratch, &mut decoded_budget, &mut out);
            }
            out
        };
        if out.len() > 1 {
            out.sort_by(|a, b| {
                (a.span.start, a.span.end, &a.rule).cmp(&(b.span.start, b.span.end, &b.rule))
            });
            out.dedup_by(|b, a| a.rule == b.rule && a.span == b.span);
        }
        out
    }

    fn windows<'t>(&self, text: &'t str) -> impl Iterator<Item = (usize, &'t str)> {
        windows(text, self.limits.window_bytes, self.limits.window_overlap)
    }

    /// How many threads a scan of `bytes` of input runs on.
    fn threads_for(&self, bytes: usize) -> usize {
        let by_size = bytes / PARALLEL_MIN_BYTES;
        if self.limits.threads == 1 || by_size < 2 {
            return 1;
        }
        let limit = match self.limits.threads {
            0 => *self.cores.get_or_init(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            }),
            n => n,
        };
        by_size.min(limit)
    }

    /// The windows split in `threads` runs of consecutive windows, each scanned on its own
    /// thread, the first on the calling thread (which also takes any run the OS refuses a
    /// thread for). Then, window by window in order,
    /// the views' findings are taken and the decoded segments rescanned, so the decoded-bytes
    /// budget is spent, and duplicates resolved, exactly as by a sequential scan.
    fn find_parallel(&self, text: &str, threads: usize) -> Vec<Finding> {
        let windows: Vec<(usize, &str)> = self.windows(text).collect();
        let per_thread = windows.len().div_ceil(threads);
        let scan_run = |run: &[(usize, &str)]| -> Vec<Scanned> {
            let mut scratch = self.pool.get();
            // Decoded text kept per thread is bounded by the budget; windows past it are
            // decoded again afterwards if budget is left (rare: a budget's worth of encodings).
            let mut kept = 0usize;
            run.iter()
                .map(|&(base, window)| {
                    let mut views = Vec::new();
                    self.scan_views(window, base, &mut scratch, &mut views);
                    let segments = if kept <= self.limits.max_decoded_bytes {
                        let segments = self.segments(window, base, &mut scratch);
                        kept += segments.iter().map(|s| s.text.len()).sum::<usize>();
                        Some(segments)
                    } else {
                        None
                    };
                    Scanned { views, segments }
                })
                .collect()
        };
        let parts: Vec<Vec<Scanned>> = std::thread::scope(|scope| {
            let mut runs = windows.chunks(per_thread);
            // The calling thread scans the first run itself (its scratch is warm; one spawn less).
            let first = runs.next().unwrap_or_default();
            let spawned: Vec<_> = runs
                .map(|run| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, move || scan_run(run))
                        .map_err(|_| run)
                })
                .collect();
            let mut parts = vec![scan_run(first)];
            parts.extend(spawned.into_iter().map(|handle| match handle {
                Ok(h) => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                Err(run) => scan_run(run),
            }));
            parts
        });
        let mut out = Vec::new();
        let mut scratch = self.pool.get();
        let mut decoded_budget = self.limits.max_decoded_bytes;
        for (scanned, &(base, window)) in parts.into_iter().flatten().zip(&windows) {
            out.extend(scanned.views);
            let segments = match scanned.segments {
                Some(segments) => segments,
                None if decoded_budget > 0 => self.segments(window, base, &mut scratch),
                None => continue,
            };
            self.scan_segments(segments, 1, &mut scratch, &mut decoded_budget, &mut out);
        }
        out
    }

    /// The raw, normalized and deobfuscated views of one window, scanned.
    fn scan_views(&self, window: &str, base: usize, s: &mut Scratch, out: &mut Vec<Finding>) {
        let rules = &self.rules;
        s.raw.clear(Mapping::Identity { base });
        s.raw.text.extend_from_slice(window.as_bytes());
        normalize_into(window, base, &mut s.folded);
        rules.find_window_candidates(
            window.as_bytes(),
            &s.folded,
            &mut s.hits_raw,
            &mut s.hits_norm,
        );
        rules.check(rules.raw(), &s.raw, "raw", &mut s.hits_raw, &self.name, out);
        rules.check(
            rules.normalized(),
            &s.folded,
            "normalized",
            &mut s.hits_norm,
            &self.name,
            out,
        );

        if deobfuscate(&s.folded, &mut s.tmp, &mut s.deobf) {
            rules.scan_normalized(&s.deobf, "deobfuscated", &mut s.hits_norm, &self.name, out);
        }
    }

    /// The encoded segments of one window, decoded (none when decoding is off).
    fn segments(&self, window: &str, base: usize, s: &mut Scratch) -> Vec<Segment> {
        if self.limits.decode_depth == 0 {
            return Vec::new();
        }
        collect_segments(window, &mut s.decode_buf, |span| {
            Span::new(base + span.start, base + span.end)
        })
    }

    fn scan_segments(
        &self,
        segments: Vec<Segment>,
        depth: u8,
        s: &mut Scratch,
        budget: &mut usize,
        out: &mut Vec<Finding>,
    ) {
        let rules = &self.rules;
        for seg in segments {
            if seg.text.len() > *budget {
                break;
            }
            *budget -= seg.text.len();
            normalize_into(&seg.text, 0, &mut s.decoded);
            s.decoded.mapping = Mapping::Constant(seg.span);
            rules.scan_normalized(
                &s.decoded,
                seg.encoding.view_name(),
                &mut s.hits_norm,
                &self.name,
                out,
            );
            if depth < self.limits.decode_depth {
                let inner = collect_segments(&seg.text, &mut s.decode_buf, |_| seg.span);
                self.scan_segments(inner, depth + 1, s, budget, out);
            }
        }
    }
}

fn collect_segments(text: &str, buf: &mut Vec<u8>, map: impl Fn(Span) -> Span) -> Vec<Segment> {
    let mut segments = Vec::new();
    decode::for_each_segment(text, buf, |span, encoding, bytes| {
        if let Ok(t) = std::str::from_utf8(bytes) {
            segments.push(Segment {
                span: map(span),
                encoding,
                text: t.to_string(),
            });
        }
    });
    segments
}

/// Split `text` into windows of at most `size` bytes overlapping by `overlap`, on char boundaries.
/// Yields `(offset, window)`; a text no longer than `size` is one window.
pub(crate) fn windows(
    text: &str,
    size: usize,
    overlap: usize,
) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let window = (start, &text[start..end]);
        if end == text.len() {
            done = true;
        } else {
            let mut next = end.saturating_sub(overlap).max(start + 1);
            while !text.is_char_boundary(next) {
                next += 1;
            }
            start = next;
        }
        Some(window)
    })
}

impl Guard for PatternGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        Ok(self.find(input.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_text_with_overlap() {
        let text = "é".repeat(5000); // 10,000 bytes of two-byte chars
        let ws: Vec<_> = windows(&text, 4096, 512).collect();
        assert!(ws.len() >= 3);
        assert_eq!(ws[0].0, 0);
        let last = ws.last().unwrap();
        assert_eq!(last.0 + last.1.len(), text.len());
        for pair in ws.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(b.0 < a.0 + a.1.len(), "windows must overlap");
        }
        assert_eq!(windows("", 4096, 512).count(), 1);
    }
}

#[cfg(test)]
mod fast_path_tests;
