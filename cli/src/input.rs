//! Where a command's texts come from (arguments, a file or stdin), and reading prompts one line
//! at a time in bounded memory, whatever the input size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// The texts of `scan` and `embed`: the TEXT arguments, else the lines of `--input` or stdin.
#[derive(Args, Debug)]
pub struct Inputs {
    /// Texts, one result each, in order.
    #[arg(value_name = "TEXT")]
    pub texts: Vec<String>,

    /// Read texts from a file, one per line (`-` = stdin).
    #[arg(long, short, value_name = "PATH", conflicts_with = "texts")]
    pub input: Option<PathBuf>,

    /// Each line is a JSON object with a `text` field; its `id` is echoed (by `scan`, every other
    /// field too).
    #[arg(long)]
    pub jsonl: bool,
}

impl Inputs {
    /// The file named by `--input`; `None` for stdin (no `--input`, or `-`).
    pub fn file(&self) -> Option<&Path> {
        self.input.as_deref().filter(|p| p.as_os_str() != "-")
    }

    /// The lines to read when no TEXT is given: the `--input` file, else stdin.
    pub fn reader(&self) -> anyhow::Result<Box<dyn BufRead>> {
        Ok(match self.file() {
            None => Box::new(io::stdin().lock()),
            Some(p) => {
                let f =
                    File::open(p).with_context(|| format!("{}: cannot open input", p.display()))?;
                Box::new(BufReader::with_capacity(256 * 1024, f))
            }
        })
    }
}

/// One line of input, read up to a byte limit.
pub struct Line {
    /// 1-based line number.
    pub number: u64,
    /// The first `limit` bytes of the line (without the newline).
    pub bytes: Vec<u8>,
    /// Length of the whole line in bytes; larger than `bytes.len()` when the line was over the limit.
    pub full_len: u64,
}

/// Iterates lines of `reader`, keeping at most `limit` bytes of each; the rest of an oversized line is
/// read and dropped, so memory stays bounded by the limit.
pub struct Lines<R> {
    reader: R,
    limit: usize,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, limit: usize) -> Self {
        Lines {
            reader,
            limit,
            number: 0,
        }
    }

    /// The next line, `Ok(None)` at end of input.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
        buf.clear();
        let mut full_len: u64 = 0;
        let mut saw_any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            saw_any = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = self.limit.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            full_len += take as u64;
            self.reader.consume(if done { take + 1 } else { take });
            if done {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        if buf.last() == Some(&b'\r') && full_len as usize == buf.len() {
            buf.pop();
            full_len -= 1;
        }
        self.number += 1;
        Ok(Some(Line {
            number: self.number,
            bytes: std::mem::take(buf),
            full_len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let data = b"short\r\n0123456789abcdef\nlast";
        let mut lines = Lines::new(std::io::BufReader::with_capacity(4, &data[..]), 8);
        let mut buf = Vec::new();
        let a = lines.next_line(&mut buf).unwrap().unwrap();
        assert_eq!((a.number, &a.bytes[..], a.full_len), (1, &b"short"[..], 5));
        let b = lines.next_line(&mut buf).unwrap().unwrap();
        assert_eq!((&b.bytes[..], b.full_len), (&b"01234567"[..], 16));
        let c = lines.next_line(&mut buf).unwrap().unwrap();
        assert_eq!(&c.bytes[..], b"last");
        assert!(lines.next_line(&mut buf).unwrap().is_none());
    }
}
