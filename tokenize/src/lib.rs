//! Tokenization for featherguard's BERT-family embedders (ONNX and libtorch backends share it).
//!
//! A text is tokenized once without truncation, then cut into overlapping windows of at most
//! [`WindowConfig::max_tokens`] tokens (special tokens included), so a long prompt's tail is always
//! seen. Rows are padded only to the longest row of a batch, never to a fixed length.

use std::ops::Range;
use std::path::{Path, PathBuf};

mod window;

pub use window::{window_starts, WindowPlan};

/// What to do with a text that needs more windows than [`WindowConfig::max_windows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Embed `max_windows` windows spread evenly over the text (first and last included) and report
    /// how many were left out; guards turn that into a `limits` finding.
    #[default]
    Sample,
    /// Refuse the text with [`TokenizeError::TooManyWindows`].
    Reject,
}

/// How texts are cut into model windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Tokens per window including `[CLS]` and `[SEP]`; at least 8.
    pub max_tokens: usize,
    /// Tokens shared by consecutive windows; less than `max_tokens - 2`.
    pub overlap: usize,
    /// Upper bound on windows per text, which bounds time and memory per input; at least 1.
    pub max_windows: usize,
    /// Policy above `max_windows`.
    pub overflow: Overflow,
}

impl Default for WindowConfig {
    fn default() -> Self {
        // MiniLM-L6-v2 was trained on 128-token inputs; 128-token windows also keep attention
        // memory small (it grows with the square of the window).
        WindowConfig {
            max_tokens: 128,
            overlap: 32,
            max_windows: 32,
            overflow: Overflow::Sample,
        }
    }
}

impl WindowConfig {
    /// Content tokens per window (without the two special tokens).
    pub fn content_tokens(&self) -> usize {
        self.max_tokens - 2
    }

    fn validate(&self) -> Result<(), TokenizeError> {
        if self.max_tokens < 8 || self.overlap + 2 >= self.max_tokens || self.max_windows == 0 {
            return Err(TokenizeError::Config(format!(
                "window of {} tokens with overlap {} and at most {} windows: need max_tokens >= 8, \
                 overlap < max_tokens - 2, max_windows >= 1",
                self.max_tokens, self.overlap, self.max_windows
            )));
        }
        Ok(())
    }
}

/// Why texts could not be tokenized.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// `tokenizer.json` is missing or unreadable.
    #[error("{}: cannot load tokenizer: {reason}; fix: run `featherguard setup --only models`", path.display())]
    Load { path: PathBuf, reason: String },
    /// The tokenizer lacks a token the BERT layout needs.
    #[error("{}: tokenizer has no `{token}` token (not a BERT WordPiece tokenizer?)", path.display())]
    MissingToken { path: PathBuf, token: &'static str },
    /// Invalid [`WindowConfig`].
    #[error("invalid window configuration: {0}")]
    Config(String),
    /// The text needs more windows than allowed and the overflow policy is [`Overflow::Reject`].
    #[error("text needs {needed} windows of {max_tokens} tokens; at most {max_windows} allowed")]
    TooManyWindows {
        needed: usize,
        max_tokens: usize,
        max_windows: usize,
    },
    /// The tokenizer library failed on a text.
    #[error("tokenization failed: {0}")]
    Encode(String),
}

/// Token rows of a batch, padded to the longest row. Row-major `rows * seq_len` values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// Number of rows (windows).
    pub rows: usize,
    /// Tokens per row after padding (the longest row's length).
    pub seq_len: usize,
    /// Token ids, `[PAD]` after each row's end.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// For text `i`, the rows of its windows.
    pub spans: Vec<Range<usize>>,
    /// For text `i`, windows left out under [`Overflow::Sample`].
    pub skipped: Vec<usize>,
}

/// One row before padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `[CLS] content [SEP]`.
    pub ids: Vec<u32>,
}

/// A BERT WordPiece tokenizer with windowing.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    cls: u32,
    sep: u32,
    pad: u32,
    config: WindowConfig,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads an HF `tokenizer.json`; its own padding and truncation settings are replaced by ours.
    pub fn from_file(path: &Path, config: WindowConfig) -> Result<TextTokenizer, TokenizeError> {
        config.validate()?;
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizeError::Load {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizeError::Load {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let id = |token: &'static str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TokenizeError::MissingToken {
                    path: path.to_owned(),
                    token,
                })
        };
        Ok(TextTokenizer {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            inner,
            config,
        })
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// The windows of one text, each `[CLS] ... [SEP]`, and how many windows were left out.
    pub fn windows(&self, text: &str) -> Result<(Vec<Row>, usize), TokenizeError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        let ids = enc.get_ids();
        let plan = WindowPlan::new(ids.len(), &self.config)?;
        let rows = plan
            .ranges()
            .map(|r| {
                let mut row = Vec::with_capacity(r.len() + 2);
                row.push(self.cls);
                row.extend_from_slice(&ids[r]);
                row.push(self.sep);
                Row { ids: row }
            })
            .collect();
        Ok((rows, plan.skipped()))
    }

    /// Tokenizes a batch into padded rows (see [`TokenBatch`]).
    pub fn encode(&self, texts: &[&str]) -> Result<TokenBatch, TokenizeError> {
        let mut rows = Vec::new();
        let mut spans = Vec::with_capacity(texts.len());
        let mut skipped = Vec::with_capacity(texts.len());
        for text in texts {
            let (w, s) = self.windows(text)?;
            spans.push(rows.len()..rows.len() + w.len());
            skipped.push(s);
            rows.extend(w);
        }
        Ok(self.pad_rows(&rows.iter().collect::<Vec<_>>(), spans, skipped))
    }

    /// Pads `rows` to the longest one.
    pub fn pad_rows(
        &self,
        rows: &[&Row],
        spans: Vec<Range<usize>>,
        skipped: Vec<usize>,
    ) -> TokenBatch {
        let seq_len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let mut input_ids = vec![i64::from(self.pad); rows.len() * seq_len];
        let mut attention_mask = vec![0i64; rows.len() * seq_len];
        for (i, row) in rows.iter().enumerate() {
            let at = i * seq_len;
            for (j, &id) in row.ids.iter().enumerate() {
                input_ids[at + j] = i64::from(id);
                attention_mask[at + j] = 1;
            }
        }
        TokenBatch {
            rows: rows.len(),
            seq_len,
            input_ids,
            attention_mask,
            spans,
            skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_are_rejected() {
        for c in [
            WindowConfig {
                max_tokens: 4,
                ..Default::default()
            },
            WindowConfig {
                overlap: 126,
                ..Default::default()
            },
            WindowConfig {
                max_windows: 0,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(c.validate(), Err(TokenizeError::Config(_))),
                "{c:?}"
            );
        }
        WindowConfig::default().validate().unwrap();
    }

    #[test]
    fn missing_tokenizer_names_setup() {
        let err = TextTokenizer::from_file(
            Path::new("/nonexistent/tokenizer.json"),
            WindowConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/tokenizer.json")
                && err.contains("featherguard setup --only models"),
            "{err}"
        );
    }
}
