//! `featherguard scan`: verdicts for texts given as arguments, lines of a file, or JSONL records.

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use featherguard::{redact, Action, Config, Firewall, Input, Source, Verdict};
use serde_json::{Map, Value};

use crate::input::{Inputs, Lines};
use crate::output::{verdict_json, write_text};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    User,
    Model,
    Tool,
    Document,
}

impl From<SourceArg> for Source {
    fn from(s: SourceArg) -> Source {
        match s {
            SourceArg::User => Source::User,
            SourceArg::Model => Source::Model,
            SourceArg::Tool => Source::Tool,
            SourceArg::Document => Source::Document,
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  featherguard scan \"Ignore previous instructions\"          one verdict per argument
  featherguard scan --input prompts.txt                       one prompt per line ('-' = stdin)
  featherguard scan --jsonl --input req.jsonl --format json   echo each record's other fields
  featherguard scan --source document --input page.txt        text retrieved from the web
  featherguard scan --redact \"my key is AKIAIOSFODNN7EXAMPLE\"   add the text with secrets/PII masked
  llm ... | featherguard scan --stream                        pass model output on as it is proven safe

With no TEXT and no --input, prompts are read from stdin, one per line. Memory stays bounded by
`limits.max_input_bytes` per line, whatever the input size.")]
pub struct ScanArgs {
    #[command(flatten)]
    guards: crate::ml::GuardArgs,

    #[command(flatten)]
    inputs: Inputs,

    /// Output format: `text` for people, `json` for one JSON object per input, in input order.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Where the texts come from (affects how indirect-injection evidence is read).
    #[arg(long, value_enum, default_value_t = SourceArg::User)]
    source: SourceArg,

    /// Also output each text with secret and PII findings replaced by `[REDACTED:<rule>]`.
    #[arg(long)]
    redact: bool,

    /// Treat stdin as one stream (an LLM's output): write text to stdout as soon as no later byte can
    /// make it part of a match, secrets and PII redacted; findings go to stderr (`--format json`:
    /// newline-delimited `text`/`finding`/`end` events on stdout).
    #[arg(long, conflicts_with_all = ["texts", "input", "jsonl", "redact"])]
    stream: bool,

    /// With --stream: stop releasing text once the policy's action reaches block.
    #[arg(long, requires = "stream")]
    stop_on_block: bool,
}

struct Outcome {
    blocked: bool,
    errors: bool,
}

struct Scanner<'a, W: Write> {
    fw: &'a Firewall,
    args: &'a ScanArgs,
    out: W,
    outcome: Outcome,
}

impl<W: Write> Scanner<'_, W> {
    fn emit(
        &mut self,
        label: &str,
        text: &str,
        verdict: &Verdict,
        echo: Option<Map<String, Value>>,
    ) -> io::Result<()> {
        self.outcome.blocked |= verdict.action == Action::Block;
        match self.args.format {
            Format::Json => {
                let mut v = verdict_json(verdict, echo);
                if self.args.redact {
                    v["redacted"] = redact(text, &verdict.findings).into();
                }
                serde_json::to_writer(&mut self.out, &v)?;
                writeln!(self.out)
            }
            Format::Text => {
                write_text(&mut self.out, label, text, verdict)?;
                if self.args.redact {
                    writeln!(
                        self.out,
                        "      redacted: {}",
                        redact(text, &verdict.findings)
                    )?;
                }
                Ok(())
            }
        }
    }

    fn error(&mut self, line: u64, message: &str) -> io::Result<()> {
        self.outcome.errors = true;
        eprintln!("featherguard: line {line}: {message}");
        if self.args.format == Format::Json {
            let v = serde_json::json!({ "line": line, "error": message });
            serde_json::to_writer(&mut self.out, &v)?;
            writeln!(self.out)?;
        }
        Ok(())
    }

    fn scan(&self, text: &str, total_len: u64) -> Verdict {
        let input = Input::new(text).with_source(self.args.source.into());
        if total_len as usize > text.len() {
            self.fw.scan_prefix(&input, total_len as usize)
        } else {
            self.fw.scan_input(&input)
        }
    }

    fn scan_lines(&mut self, reader: impl BufRead, limit: usize) -> anyhow::Result<()> {
        let mut lines = Lines::new(reader, limit);
        let mut buf = Vec::new();
        while let Some(line) = lines.next_line(&mut buf)? {
            let text = match std::str::from_utf8(&line.bytes) {
                Ok(t) => t,
                // A line cut at the byte limit may end inside a char: keep the valid prefix.
                Err(e) if line.full_len as usize > line.bytes.len() && e.error_len().is_none() => {
                    std::str::from_utf8(&line.bytes[..e.valid_up_to()]).unwrap_or_default()
                }
                Err(e) => {
                    self.error(
                        line.number,
                        &format!(
                            "invalid UTF-8 at byte {}; line not scanned",
                            e.valid_up_to()
                        ),
                    )?;
                    buf = line.bytes;
                    continue;
                }
            };
            if self.args.inputs.jsonl {
                self.scan_record(line.number, text, line.full_len)?;
            } else {
                let verdict = self.scan(text, line.full_len);
                let echo = self.args.inputs.input.as_ref().map(|_| {
                    let mut m = Map::new();
                    m.insert("line".into(), line.number.into());
                    m
                });
                self.emit(&format!("line {}", line.number), text, &verdict, echo)?;
            }
            buf = line.bytes;
        }
        Ok(())
    }

    fn scan_record(&mut self, number: u64, line: &str, full_len: u64) -> io::Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        if full_len as usize > line.len() {
            return self.error(
                number,
                "JSON record longer than limits.max_input_bytes; not scanned",
            );
        }
        let mut obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return self.error(number, "expected a JSON object with a \"text\" field"),
            Err(e) => return self.error(number, &format!("invalid JSON: {e}")),
        };
        let text = match obj.remove("text") {
            Some(Value::String(s)) => s,
            Some(_) => return self.error(number, "field \"text\" must be a string"),
            None => return self.error(number, "missing field \"text\""),
        };
        let verdict = self.scan(&text, text.len() as u64);
        let label = obj
            .get("id")
            .map(|id| format!("id {id}"))
            .unwrap_or_else(|| format!("line {number}"));
        self.emit(&label, &text, &verdict, Some(obj))
    }
}

pub fn run(args: &ScanArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    if args.stream {
        return crate::stream::run(args.format, args.stop_on_block, cfg);
    }
    let fw = crate::ml::build_firewall(cfg, &args.guards)?;
    let stdout = io::stdout();
    let mut s = Scanner {
        fw: &fw,
        args,
        out: BufWriter::new(stdout.lock()),
        outcome: Outcome {
            blocked: false,
            errors: false,
        },
    };
    let limit = cfg.limits.max_input_bytes;
    if !args.inputs.texts.is_empty() {
        for text in &args.inputs.texts {
            if args.inputs.jsonl {
                s.scan_record(0, text, text.len() as u64)?;
            } else {
                let v = s.scan(text, text.len() as u64);
                s.emit("", text, &v, None)?;
            }
        }
    } else {
        s.scan_lines(args.inputs.reader()?, limit)
            .map_err(|e| match args.inputs.file() {
                Some(p) => anyhow::anyhow!("{}: {e:#}", p.display()),
                None => e,
            })?;
    }
    s.out.flush()?;
    Ok(if s.outcome.errors {
        ExitCode::from(2)
    } else if s.outcome.blocked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
