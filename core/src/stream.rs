//! Streaming output scanning: text arrives chunk by chunk (an LLM's tokens) and is released only
//! once no later byte can make it part of a match, with secrets and PII redacted.

use std::sync::Arc;

use serde::Serialize;

use crate::policy::Policy;
use crate::redact::redact;
use crate::scanner::PatternGuard;
use crate::verdict::{Action, Finding, Span};

/// What one call to [`StreamScanner::push`] or [`StreamScanner::finish`] produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamChunk {
    /// Text now safe to pass on, secrets and PII replaced by `[REDACTED:<rule>]`.
    pub text: String,
    /// Stream byte offset of the first original byte `text` stands for.
    pub offset: usize,
    /// Original bytes `text` stands for (differs from `text.len()` where something was redacted).
    pub original_len: usize,
    /// Findings that became final, spans in bytes from the start of the whole stream.
    pub findings: Vec<Finding>,
    /// The policy's action over every finding so far (it only ever rises).
    pub action: Action,
}

/// One event of a scanned stream, as newline-delimited JSON (`"event"` names the kind): the shape the
/// CLI's `scan --stream --format json` and the server's streaming endpoint both write.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent<'a> {
    /// Released text (redacted), standing for `original_len` stream bytes from `offset`.
    Text {
        offset: usize,
        original_len: usize,
        text: &'a str,
    },
    /// A finding that became final; `start`/`end` are offsets in the whole stream.
    Finding(&'a Finding),
    /// The stream ended: final action, bytes received, findings reported.
    End {
        action: Action,
        bytes: usize,
        findings: usize,
    },
}

impl StreamChunk {
    /// The chunk's findings, then its text if any: a consumer sees a finding before the text it
    /// concerns.
    pub fn events(&self) -> impl Iterator<Item = StreamEvent<'_>> {
        let text = (!self.text.is_empty() || self.original_len > 0).then_some(StreamEvent::Text {
            offset: self.offset,
            original_len: self.original_len,
            text: &self.text,
        });
        self.findings.iter().map(StreamEvent::Finding).chain(text)
    }
}

/// Scans a stream of text with a pattern guard.
///
/// Invariants: a byte is released only when at least `holdback` bytes follow it (or the stream
/// ended), and never inside a secret/PII finding that might still grow; the last `holdback` released
/// bytes are kept as left context for later scans. With `holdback` at least the guard's longest match
/// (`ScanLimits::window_overlap`, the same guarantee windowed scans give), the stream yields the
/// findings a scan of the whole text would, at the same offsets, whatever the chunking. Memory stays
/// at about `2 * holdback + step` bytes plus the largest chunk piece, however long the stream.
pub struct StreamScanner {
    guard: Arc<PatternGuard>,
    policy: Policy,
    /// Bytes kept unreleased at the end of the buffer, and kept as left context once released.
    holdback: usize,
    /// New bytes accumulated before the buffer is rescanned.
    step: usize,
    /// Text from stream offset `base` on.
    buf: String,
    base: usize,
    /// Everything before this stream offset has been released.
    released: usize,
    /// Every finding ending at or before this stream offset has been reported.
    stable: usize,
    /// Stream offset of the end of `buf` when it was last scanned.
    scanned_end: usize,
    action: Action,
    finished: bool,
    /// Bytes of a UTF-8 sequence cut at the end of the last `push_bytes` (at most 3).
    partial: Vec<u8>,
}

impl std::fmt::Debug for StreamScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamScanner")
            .field("holdback", &self.holdback)
            .field("step", &self.step)
            .field("buffered", &self.buf.len())
            .field("released", &self.released)
            .finish()
    }
}

impl StreamScanner {
    /// A scanner holding back the guard's `window_overlap` bytes, rescanning every half of that.
    pub fn new(guard: Arc<PatternGuard>, policy: Policy) -> StreamScanner {
        let holdback = guard.limits().window_overlap.max(64);
        StreamScanner {
            guard,
            policy,
            holdback,
            step: holdback / 2,
            buf: String::new(),
            base: 0,
            released: 0,
            stable: 0,
            scanned_end: 0,
            action: Action::Allow,
            finished: false,
            partial: Vec::new(),
        }
    }

    /// Hold back `bytes` instead: less latency, but a match longer than `bytes` may then be cut at
    /// a release point and missed. `step` is set to half of it.
    pub fn with_holdback(mut self, bytes: usize) -> StreamScanner {
        self.holdback = bytes.max(1);
        self.step = (self.holdback / 2).max(1);
        self
    }

    pub fn holdback(&self) -> usize {
        self.holdback
    }

    /// Bytes held in memory now (context plus unreleased text).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Stream bytes received so far.
    pub fn position(&self) -> usize {
        self.base + self.buf.len()
    }

    /// The policy's action over every finding reported so far.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Feed the next piece of the stream. Large chunks are taken in pieces so the buffer stays bounded.
    pub fn push(&mut self, chunk: &str) -> StreamChunk {
        let mut out = self.empty_chunk();
        if self.finished {
            return out;
        }
        let piece = self.holdback.saturating_add(self.step).max(1024);
        let mut rest = chunk;
        while !rest.is_empty() {
            let mut cut = piece.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            self.buf.push_str(&rest[..cut]);
            rest = &rest[cut..];
            if self.position() - self.scanned_end >= self.step {
                let next = self.scan(false);
                append(&mut out, next);
            }
        }
        out.action = self.action;
        out
    }

    /// Feed raw bytes, e.g. straight from a pipe: a UTF-8 sequence cut between two calls is completed
    /// by the next one; invalid bytes become U+FFFD (so offsets then count the replacement's 3 bytes).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> StreamChunk {
        let mut out = self.empty_chunk();
        let mut rest = bytes;
        if !self.partial.is_empty() {
            // Complete the sequence left over from the last call, one byte at a time.
            while !rest.is_empty() && self.partial.len() < 4 {
                self.partial.push(rest[0]);
                rest = &rest[1..];
                match std::str::from_utf8(&self.partial) {
                    Ok(s) => {
                        let s = s.to_string();
                        self.partial.clear();
                        append(&mut out, self.push(&s));
                        break;
                    }
                    Err(e) => {
                        if let Some(n) = e.error_len() {
                            // Only the invalid sequence becomes U+FFFD; the byte that ended it came
                            // from `bytes` and starts over with the rest (as a whole-text decode does).
                            let bad = e.valid_up_to() + n;
                            let back = (self.partial.len() - bad).min(bytes.len() - rest.len());
                            rest = &bytes[bytes.len() - rest.len() - back..];
                            let s = String::from_utf8_lossy(&self.partial[..bad]).into_owned();
                            self.partial.clear();
                            append(&mut out, self.push(&s));
                            break;
                        }
                    }
                }
            }
            if !self.partial.is_empty() {
                out.action = self.action;
                return out;
            }
        }
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    append(&mut out, self.push(s));
                    break;
                }
                Err(e) => {
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    append(
                        &mut out,
                        self.push(std::str::from_utf8(valid).unwrap_or_default()),
                    );
                    match e.error_len() {
                        Some(n) => {
                            append(&mut out, self.push("\u{FFFD}"));
                            rest = &tail[n..];
                        }
                        None => {
                            self.partial.extend_from_slice(tail);
                            break;
                        }
                    }
                }
            }
        }
        out.action = self.action;
        out
    }

    /// End of stream: scan and release everything left. Later pushes are ignored.
    pub fn finish(&mut self) -> StreamChunk {
        if self.finished {
            return self.empty_chunk();
        }
        self.finished = true;
        if !self.partial.is_empty() {
            // The stream ended inside a UTF-8 sequence.
            let s = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            self.buf.push_str(&s);
        }
        self.scan(true)
    }

    fn empty_chunk(&self) -> StreamChunk {
        StreamChunk {
            offset: self.released,
            action: self.action,
            ..StreamChunk::default()
        }
    }

    fn scan(&mut self, last: bool) -> StreamChunk {
        let end = self.position();
        self.scanned_end = end;
        let mut found = self.guard.find(&self.buf);
        for f in &mut found {
            f.span = Span::new(f.span.start + self.base, f.span.end + self.base);
        }
        let stable_to = if last {
            end
        } else {
            end.saturating_sub(self.holdback).max(self.stable)
        };

        // Report what became final: findings ending after the last stable point. Earlier ones were
        // reported by a scan that saw them whole; a match cut at this buffer's left edge ends early.
        let fresh: Vec<Finding> = found
            .iter()
            .filter(|f| f.span.end > self.stable && f.span.end <= stable_to)
            .cloned()
            .collect();
        for f in &fresh {
            self.action = self
                .action
                .max(self.policy.thresholds(f.family).action(f.score));
        }
        self.stable = stable_to;

        // Release up to the stable point, but not into a secret that may still be growing; the
        // buffer bound wins over that only for a "secret" longer than the buffer allows.
        let mut to = self.floor_boundary(stable_to);
        let reach = self.holdback.saturating_mul(4).saturating_add(self.step);
        let floor = self.floor_boundary(end.saturating_sub(reach));
        loop {
            let cut = found
                .iter()
                .filter(|f| f.family.is_sensitive_data())
                .filter(|f| f.span.start < to && f.span.end > to && f.span.start >= self.released)
                .map(|f| f.span.start)
                .min();
            match cut {
                Some(start) if start.max(floor) < to => to = self.floor_boundary(start.max(floor)),
                _ => break,
            }
        }
        let to = to.max(self.released);

        let from = self.released;
        let slice = &self.buf[from - self.base..to - self.base];
        let in_slice: Vec<Finding> = found
            .into_iter()
            .filter(|f| f.family.is_sensitive_data() && f.span.end > from && f.span.start < to)
            .map(|mut f| {
                f.span = Span::new(f.span.start.max(from) - from, f.span.end.min(to) - from);
                f
            })
            .collect();
        let text = redact(slice, &in_slice);
        self.released = to;

        // Keep `holdback` bytes of released text as left context for matches that straddle it.
        let keep_from = self.floor_boundary(to.saturating_sub(self.holdback).max(self.base));
        self.buf.drain(..keep_from - self.base);
        self.base = keep_from;

        StreamChunk {
            text,
            offset: from,
            original_len: to - from,
            findings: fresh,
            action: self.action,
        }
    }

    /// The largest char boundary of the buffer at or before stream offset `at` (not before `base`).
    fn floor_boundary(&self, at: usize) -> usize {
        let mut i = at.clamp(self.base, self.position()) - self.base;
        while !self.buf.is_char_boundary(i) {
            i -= 1;
        }
        self.base + i
    }
}

fn append(out: &mut StreamChunk, next: StreamChunk) {
    if out.text.is_empty() && out.original_len == 0 {
        out.offset = next.offset;
    }
    out.text.push_str(&next.text);
    out.original_len += next.original_len;
    out.findings.extend(next.findings);
    out.action = next.action;
}
