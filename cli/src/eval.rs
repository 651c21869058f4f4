//! `featherguard eval`: detection (recall per family, false positives, precision, F1) and speed
//! (latency percentiles, throughput) on a labeled JSONL corpus.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use featherguard::{Action, Config};
use serde::Serialize;
use serde_json::Value;

use crate::input::Lines;
use crate::scan::Format;

#[derive(Args, Debug)]
#[command(after_help = "\
Corpus lines look like {\"text\": \"...\", \"label\": \"attack\"|\"benign\", \"category\": \"family:detail\"}.
A `block` verdict counts as a detection; the `flag_or_block` columns count flags too.

Examples:
  featherguard eval --corpus dev.jsonl
  featherguard eval --corpus dev.jsonl --exclude harmful_request --exclude jailbreak:past_tense
  featherguard eval --corpus dev.jsonl --format json > report.json")]
pub struct EvalArgs {
    #[command(flatten)]
    guards: crate::ml::GuardArgs,

    /// Labeled JSONL corpus.
    #[arg(long, value_name = "FILE")]
    corpus: PathBuf,

    /// Leave attacks whose category starts with this prefix out of the summary (still listed per
    /// family). Repeatable.
    #[arg(long, value_name = "PREFIX")]
    exclude: Vec<String>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Print every missed attack and every false positive (text mode).
    #[arg(long)]
    show_errors: bool,
}

#[derive(Default, Serialize, Clone)]
struct Counts {
    total: u64,
    blocked: u64,
    flagged_or_blocked: u64,
}

impl Counts {
    fn add(&mut self, action: Action) {
        self.total += 1;
        self.blocked += u64::from(action == Action::Block);
        self.flagged_or_blocked += u64::from(action >= Action::Flag);
    }
    fn rate(&self) -> f64 {
        ratio(self.blocked, self.total)
    }
    fn rate_fb(&self) -> f64 {
        ratio(self.flagged_or_blocked, self.total)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(Serialize)]
struct Report {
    corpus: String,
    items: u64,
    skipped_lines: u64,
    excluded_prefixes: Vec<String>,
    families: BTreeMap<String, FamilyRow>,
    summary: Summary,
    latency_us: Latency,
    throughput_per_s: f64,
    throughput_mb_per_s: f64,
}

#[derive(Serialize)]
struct FamilyRow {
    #[serde(flatten)]
    counts: Counts,
    recall: f64,
    recall_flag_or_block: f64,
}

#[derive(Serialize)]
struct Summary {
    attacks: u64,
    detected: u64,
    recall: f64,
    recall_flag_or_block: f64,
    benign: u64,
    false_positives: u64,
    false_positive_rate: f64,
    benign_flagged_or_blocked: u64,
    precision: f64,
    f1: f64,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

struct Progress {
    enabled: bool,
    total_bytes: u64,
    last: Instant,
}

impl Progress {
    fn tick(&mut self, done_bytes: u64, items: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let frac = ratio(done_bytes, self.total_bytes.max(1)).min(1.0);
        let width = 30;
        let filled = (frac * width as f64) as usize;
        eprint!(
            "\r[{}{}] {:>3.0}% {items} items",
            "=".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0
        );
    }
    fn finish(&self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(60));
        }
    }
}

pub fn run(args: &EvalArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    let fw = crate::ml::build_firewall(cfg, &args.guards)?;
    let file = File::open(&args.corpus)
        .map_err(|e| anyhow::anyhow!("{}: cannot open corpus: {e}", args.corpus.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut progress = Progress {
        enabled: io::stderr().is_terminal() && args.format == Format::Text,
        total_bytes,
        last: Instant::now(),
    };
    let mut lines = Lines::new(BufReader::new(file), cfg.limits.max_input_bytes);
    let mut buf = Vec::new();
    let mut families: BTreeMap<String, Counts> = BTreeMap::new();
    let mut attacks = Counts::default();
    let mut benign = Counts::default();
    let mut latencies = Vec::new();
    let mut bytes_scanned: u64 = 0;
    let mut read_bytes: u64 = 0;
    let mut skipped = 0u64;
    let mut errors_out = Vec::new();
    let started = Instant::now();
    while let Some(line) = lines.next_line(&mut buf)? {
        read_bytes += line.full_len + 1;
        progress.tick(read_bytes, attacks.total + benign.total);
        let parsed: Option<(String, String, String)> = serde_json::from_slice::<Value>(&line.bytes)
            .ok()
            .and_then(|v| {
                let text = v.get("text")?.as_str()?.to_string();
                let label = v.get("label")?.as_str()?.to_string();
                let category = v
                    .get("category")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                Some((text, label, category))
            });
        buf = line.bytes;
        let Some((text, label, category)) = parsed else {
            if !buf.iter().all(u8::is_ascii_whitespace) {
                eprintln!(
                    "featherguard: {}:{}: skipped: expected {{\"text\": str, \"label\": \"attack\"|\"benign\"}}",
                    args.corpus.display(),
                    line.number
                );
                skipped += 1;
            }
            continue;
        };
        let t = Instant::now();
        let verdict = fw.scan(&text);
        latencies.push(t.elapsed());
        bytes_scanned += text.len() as u64;
        match label.as_str() {
            "attack" => {
                let family = category
                    .split(':')
                    .next()
                    .filter(|f| !f.is_empty())
                    .unwrap_or("unlabeled");
                let excluded = args
                    .exclude
                    .iter()
                    .any(|p| category.starts_with(p.as_str()));
                let row = if excluded {
                    format!("{family} (excluded)")
                } else {
                    family.to_string()
                };
                families.entry(row).or_default().add(verdict.action);
                if !excluded {
                    attacks.add(verdict.action);
                    if verdict.action != Action::Block && args.show_errors {
                        errors_out.push(format!(
                            "MISS [{category}] {}",
                            crate::output::snippet(&text, 150)
                        ));
                    }
                }
            }
            "benign" => {
                benign.add(verdict.action);
                if verdict.action == Action::Block && args.show_errors {
                    let rules: Vec<&str> = verdict.findings.iter().map(|f| &*f.rule).collect();
                    errors_out.push(format!(
                        "FP {:?} {}",
                        rules,
                        crate::output::snippet(&text, 150)
                    ));
                }
            }
            other => {
                eprintln!(
                    "featherguard: {}:{}: skipped: label must be \"attack\" or \"benign\", got {other:?}",
                    args.corpus.display(),
                    line.number
                );
                skipped += 1;
            }
        }
    }
    let wall = started.elapsed();
    progress.finish();
    latencies.sort();
    let tp = attacks.blocked;
    let fp = benign.blocked;
    let precision = ratio(tp, tp + fp);
    let recall = attacks.rate();
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let items = latencies.len() as u64;
    let report = Report {
        corpus: args.corpus.display().to_string(),
        items,
        skipped_lines: skipped,
        excluded_prefixes: args.exclude.clone(),
        families: families
            .into_iter()
            .map(|(k, c)| {
                let row = FamilyRow {
                    recall: c.rate(),
                    recall_flag_or_block: c.rate_fb(),
                    counts: c,
                };
                (k, row)
            })
            .collect(),
        summary: Summary {
            attacks: attacks.total,
            detected: tp,
            recall,
            recall_flag_or_block: attacks.rate_fb(),
            benign: benign.total,
            false_positives: fp,
            false_positive_rate: benign.rate(),
            benign_flagged_or_blocked: benign.flagged_or_blocked,
            precision,
            f1,
        },
        latency_us: Latency {
            p50: percentile(&latencies, 0.50),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            max: percentile(&latencies, 1.0),
        },
        throughput_per_s: items as f64 / wall.as_secs_f64().max(1e-9),
        throughput_mb_per_s: bytes_scanned as f64 / 1e6 / wall.as_secs_f64().max(1e-9),
    };
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Text => {
            for e in &errors_out {
                writeln!(out, "{e}")?;
            }
            print_text(&mut out, &report)?;
        }
    }
    Ok(if skipped > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "corpus: {} ({} items)", r.corpus, r.items)?;
    writeln!(
        out,
        "{:<22} {:>7} {:>8} {:>8} {:>14}",
        "family", "attacks", "blocked", "recall", "flag|block"
    )?;
    for (name, row) in &r.families {
        writeln!(
            out,
            "{:<22} {:>7} {:>8} {:>7.1}% {:>13.1}%",
            name,
            row.counts.total,
            row.counts.blocked,
            row.recall * 100.0,
            row.recall_flag_or_block * 100.0
        )?;
    }
    let s = &r.summary;
    if !r.excluded_prefixes.is_empty() {
        writeln!(
            out,
            "summary excludes categories starting with: {}",
            r.excluded_prefixes.join(", ")
        )?;
    }
    writeln!(
        out,
        "recall {:.1}% ({}/{}), flag|block {:.1}%",
        s.recall * 100.0,
        s.detected,
        s.attacks,
        s.recall_flag_or_block * 100.0
    )?;
    writeln!(
        out,
        "benign false positives {:.2}% ({}/{}), flagged {}",
        s.false_positive_rate * 100.0,
        s.false_positives,
        s.benign,
        s.benign_flagged_or_blocked
    )?;
    writeln!(out, "precision {:.3}  F1 {:.3}", s.precision, s.f1)?;
    writeln!(
        out,
        "latency p50 {:.1}us p95 {:.1}us p99 {:.1}us max {:.1}us; {:.0} items/s, {:.1} MB/s",
        r.latency_us.p50,
        r.latency_us.p95,
        r.latency_us.p99,
        r.latency_us.max,
        r.throughput_per_s,
        r.throughput_mb_per_s
    )
}
