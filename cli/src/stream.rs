//! `featherguard scan --stream`: scan stdin as one growing text (an LLM's output), writing text as
//! soon as it is proven safe, with secrets and PII redacted.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use featherguard::{
    pattern_guard, Action, Config, Finding, StreamChunk, StreamEvent, StreamScanner,
};

use crate::scan::Format;

/// Where released text and findings go.
struct Sink<O: Write> {
    out: O,
    format: Format,
    findings: usize,
}

impl<O: Write> Sink<O> {
    fn chunk(&mut self, c: &StreamChunk) -> io::Result<()> {
        self.findings += c.findings.len();
        match self.format {
            Format::Json => {
                for event in c.events() {
                    serde_json::to_writer(&mut self.out, &event)?;
                    self.out.write_all(b"\n")?;
                }
            }
            Format::Text => {
                for f in &c.findings {
                    report(f);
                }
                self.out.write_all(c.text.as_bytes())?;
            }
        }
        // Released text is meant to be seen now, not when a buffer fills.
        self.out.flush()
    }
}

fn report(f: &Finding) {
    eprintln!(
        "featherguard: {} [{} {}] bytes {}..{}",
        f.rule, f.family, f.severity, f.span.start, f.span.end
    );
}

/// Read stdin until it ends, releasing text as the scanner allows. With `stop_on_block`, stop
/// reading and releasing as soon as the policy's action reaches block.
pub fn run(format: Format, stop_on_block: bool, cfg: &Config) -> anyhow::Result<ExitCode> {
    let guard = Arc::new(pattern_guard(cfg)?);
    let mut scanner = StreamScanner::new(guard, cfg.policy.clone());
    let stdout = io::stdout();
    let mut sink = Sink {
        out: stdout.lock(),
        format,
        findings: 0,
    };
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 8192];
    let mut stopped = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let chunk = scanner.push_bytes(&buf[..n]);
        if stop_on_block && chunk.action == Action::Block {
            // Report why, release nothing more.
            let held = StreamChunk {
                text: String::new(),
                original_len: 0,
                ..chunk
            };
            sink.chunk(&held)?;
            stopped = true;
            break;
        }
        sink.chunk(&chunk)?;
    }
    if !stopped {
        let last = scanner.finish();
        sink.chunk(&last)?;
    }
    let action = scanner.action();
    if format == Format::Json {
        let end = StreamEvent::End {
            action,
            bytes: scanner.position(),
            findings: sink.findings,
        };
        serde_json::to_writer(&mut sink.out, &end)?;
        sink.out.write_all(b"\n")?;
        sink.out.flush()?;
    } else if stopped {
        eprintln!(
            "featherguard: stream blocked at byte {}; the rest was not released",
            scanner.position()
        );
    }
    Ok(if action == Action::Block {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
