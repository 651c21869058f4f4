//! A normalized view of (a window of) the input and the map from its bytes back to the original text.

use crate::verdict::Span;

/// How bytes of a view map back to the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Byte `i` of the view is byte `base + i` of the original (ASCII input, only case changed).
    Identity { base: usize },
    /// Byte `i` of the view came from original bytes `base + spans[i].0 .. base + spans[i].1`.
    Table { base: usize },
    /// Every byte came from this original span (a decoded base64/hex/url segment).
    Constant(Span),
}

/// Reusable buffers for one view; kept in a scratch pool so clean scans do not allocate.
#[derive(Debug)]
pub(crate) struct View {
    /// Valid UTF-8 by construction (normalizers only push whole chars).
    pub(crate) text: Vec<u8>,
    /// Per view byte: the `[start, end)` original char range it came from (offsets relative to `base`).
    pub(crate) spans: Vec<(u32, u32)>,
    pub(crate) mapping: Mapping,
}

impl Default for View {
    fn default() -> Self {
        View {
            text: Vec::new(),
            spans: Vec::new(),
            mapping: Mapping::Identity { base: 0 },
        }
    }
}

impl View {
    pub(crate) fn clear(&mut self, mapping: Mapping) {
        self.text.clear();
        self.spans.clear();
        self.mapping = mapping;
    }

    /// Append `s`, all of it produced by original bytes `[from, to)` (relative to base).
    #[inline]
    pub(crate) fn push_str(&mut self, s: &str, from: u32, to: u32) {
        self.text.extend_from_slice(s.as_bytes());
        if matches!(self.mapping, Mapping::Table { .. }) {
            self.spans.extend(std::iter::repeat_n((from, to), s.len()));
        }
    }

    #[inline]
    pub(crate) fn push_char(&mut self, c: char, from: u32, to: u32) {
        let mut buf = [0u8; 4];
        self.push_str(c.encode_utf8(&mut buf), from, to);
    }

    /// Original span of view bytes `[start, end)`; `start < end <= text.len()`.
    /// A byte-level pattern may start or end inside a multi-byte char (a context class such as
    /// `[^\w]` consumed one byte of it): the span shrinks to the whole chars inside the match.
    pub(crate) fn original(&self, start: usize, end: usize) -> Span {
        debug_assert!(start < end && end <= self.text.len());
        match self.mapping {
            Mapping::Identity { base } => {
                let is_cont = |i: usize| self.text.get(i).is_some_and(|b| b & 0xC0 == 0x80);
                let mut s = start;
                while s < end && is_cont(s) {
                    s += 1;
                }
                let mut e = end;
                while e > s && is_cont(e) {
                    e -= 1;
                }
                Span::new(base + s, base + e)
            }
            Mapping::Table { base } => {
                let s = self.spans[start].0 as usize;
                let e = self.spans[end - 1].1 as usize;
                Span::new(base + s, base + e.max(s))
            }
            Mapping::Constant(span) => span,
        }
    }

    /// Original span of a single view byte (used to compose derived views).
    pub(crate) fn source_of(&self, i: usize) -> (u32, u32) {
        match self.mapping {
            Mapping::Identity { .. } => (i as u32, i as u32 + 1),
            Mapping::Table { .. } => self.spans[i],
            Mapping::Constant(_) => (0, 0),
        }
    }

    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        // Normalizers and decoders only ever push whole, valid chars.
        std::str::from_utf8(&self.text).unwrap_or("")
    }
}
