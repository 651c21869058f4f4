//! `featherguard diag memory` (hidden): the process's own memory at each stage of bringing the
//! selected guards up, so a regression in the audit shows where it comes from (rules, runtime
//! library, session, first inference, many prompts, unload, reload), and what the unload left over
//! the process before the runtime was loaded.
//!
//! The stages go through the same constructors as `scan` and `serve` (the firewall builder and the
//! ML embedder in `ml.rs`), whatever the backend, so a new backend gets its rows without changes
//! here. Figures are the kernel's (`/proc/self/status`): what `ps` and cgroups see.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use featherguard::{Config, Firewall, Guard, Input, ScanOptions};
use serde::Serialize;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum DiagCommand {
    /// RSS and peak RSS after each stage of loading and using the guards.
    Memory(MemoryArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiagFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[command(flatten)]
    guards: crate::ml::GuardArgs,

    /// Scan every line of this file after the first inference (e.g. 1,000 varied prompts), then
    /// report a stage; with ML guards, scan it once with the pattern guard alone before anything
    /// heavy loads too (stage `pre_load`, the figure the unload is compared with).
    #[arg(long, value_name = "PATH")]
    prompts: Option<PathBuf>,

    /// Skip the unload and reload stages.
    #[arg(long)]
    no_unload: bool,

    #[arg(long, short, value_enum, default_value_t = DiagFormat::Text)]
    format: DiagFormat,
}

/// Memory figures of this process, KiB, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Status {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
}

impl Status {
    fn now() -> Status {
        let s = featherguard::ProcStatus::read().unwrap_or_default();
        Status {
            rss_kib: s.rss / 1024,
            hwm_kib: s.peak / 1024,
            anon_kib: s.anon / 1024,
            file_kib: s.file / 1024,
        }
    }
}

#[derive(Debug, Serialize)]
struct Stage {
    stage: &'static str,
    /// Milliseconds since the diagnostic started (after argument parsing and config load).
    ms: f64,
    #[serde(flatten)]
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

struct Recorder {
    started: Instant,
    stages: Vec<Stage>,
}

/// What the unload left: `after_unload` minus the last stage before the runtime library was
/// loaded (`pre_load` when prompts were given, else `rules_compiled`), KiB.
#[derive(Debug, Serialize)]
struct Residue {
    against: &'static str,
    rss_kib: i64,
    anon_kib: i64,
    file_kib: i64,
}

impl Recorder {
    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.stage == name)
    }

    fn residue(&self) -> Option<Residue> {
        let after = self.stage("after_unload")?;
        let before = self
            .stage("pre_load")
            .or_else(|| self.stage("rules_compiled"))?;
        let d = |a: u64, b: u64| a as i64 - b as i64;
        Some(Residue {
            against: before.stage,
            rss_kib: d(after.status.rss_kib, before.status.rss_kib),
            anon_kib: d(after.status.anon_kib, before.status.anon_kib),
            file_kib: d(after.status.file_kib, before.status.file_kib),
        })
    }

    fn mark(&mut self, stage: &'static str, note: Option<String>) {
        self.stages.push(Stage {
            stage,
            ms: self.started.elapsed().as_secs_f64() * 1e3,
            status: Status::now(),
            note,
        });
    }
}

pub fn run(cmd: &DiagCommand, cfg: &Config) -> anyhow::Result<ExitCode> {
    let DiagCommand::Memory(args) = cmd;
    let mut rec = Recorder {
        started: Instant::now(),
        stages: Vec::new(),
    };
    rec.mark("start", None);
    let fw = crate::ml::build_firewall(cfg, &args.guards)?;
    if let Some(p) = fw.pattern() {
        // Rules compile lazily per view; warm them so this stage holds the compiled automata.
        p.rules().warm();
    }
    rec.mark("rules_compiled", None);
    let ml = !fw.slots().is_empty();
    if let (true, Some(path), Some(p)) = (ml, &args.prompts, fw.pattern()) {
        // The pre-load figure: the pattern engine grows its lazily built automata on these
        // prompts whether or not a model runs, so it must be in the figure the unload is compared
        // with (as `scripts/server/load_ml.sh` warms the server up pattern-only).
        let only_patterns = ScanOptions {
            guards: Some(vec![p.name().to_string()]),
            ..ScanOptions::default()
        };
        let n = scan_lines(path, |line| {
            check_errors(&fw.scan_with(&Input::new(line), &only_patterns))
        })?;
        rec.mark("pre_load", Some(format!("{n} prompts, pattern guard only")));
    }
    if ml {
        runtime_stage(&mut rec, cfg, &args.guards)?;
        for slot in fw.slots() {
            slot.load()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("loading guard {}", slot.name()))?;
        }
        rec.mark("model_loaded", Some(slot_names(&fw)));
    }
    let first = fw.scan("What is the capital of France?");
    check_errors(&first)?;
    rec.mark("first_inference", None);
    if let Some(path) = &args.prompts {
        let n = scan_lines(path, |line| check_errors(&fw.scan(line)))?;
        rec.mark("after_prompts", Some(format!("{n} prompts")));
    }
    if ml && !args.no_unload {
        // What `idle_unload_secs` does when it fires (the same slot call), without the wait.
        let freed: usize = fw.slots().iter().map(|s| usize::from(s.unload())).sum();
        rec.mark("after_unload", Some(format!("{freed} guards unloaded")));
        check_errors(&fw.scan("What is the capital of France?"))?;
        rec.mark("after_reload", None);
    }
    let residue = rec.residue();
    let stats = fw.stats();
    let mut out = io::BufWriter::new(io::stdout().lock());
    match args.format {
        DiagFormat::Json => {
            let v = json!({
                "guards": stats.guards.iter().chain(stats.slots.iter().map(|s| &s.name)).collect::<Vec<_>>(),
                "stages": rec.stages,
                "slots": stats.slots,
                "unload_residue": residue,
            });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        }
        DiagFormat::Text => {
            writeln!(
                out,
                "{:<16} {:>9} {:>10} {:>10} {:>10} {:>10}",
                "stage", "ms", "RSS MiB", "peak MiB", "anon MiB", "file MiB"
            )?;
            for s in &rec.stages {
                let mib = |k: u64| k as f64 / 1024.0;
                writeln!(
                    out,
                    "{:<16} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}{}",
                    s.stage,
                    s.ms,
                    mib(s.status.rss_kib),
                    mib(s.status.hwm_kib),
                    mib(s.status.anon_kib),
                    mib(s.status.file_kib),
                    s.note
                        .as_ref()
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                )?;
            }
            if let Some(r) = residue {
                let mib = |k: i64| k as f64 / 1024.0;
                writeln!(
                    out,
                    "after_unload - {}: {:+.1} MiB (anon {:+.1}, file {:+.1})",
                    r.against,
                    mib(r.rss_kib),
                    mib(r.anon_kib),
                    mib(r.file_kib)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Calls `scan` on every line of `path`; returns the number of lines.
fn scan_lines(
    path: &std::path::Path,
    mut scan: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("{}: cannot open prompts", path.display()))?;
    let mut n = 0usize;
    for line in io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("{}: not UTF-8", path.display()))?;
        scan(&line)?;
        n += 1;
    }
    Ok(n)
}

fn slot_names(fw: &Firewall) -> String {
    fw.slots()
        .iter()
        .map(|s| s.name().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A diagnostic that silently measured a failed guard would report a model-less process as fine.
fn check_errors(v: &featherguard::Verdict) -> anyhow::Result<()> {
    match v.errors.first() {
        Some(e) => anyhow::bail!("guard {} failed: {}", e.guard, e.error),
        None => Ok(()),
    }
}

/// Loads the backend's runtime library alone, through the embedder constructor the guards use.
#[cfg(feature = "onnx")]
fn runtime_stage(
    rec: &mut Recorder,
    cfg: &Config,
    args: &crate::ml::GuardArgs,
) -> anyhow::Result<()> {
    crate::ml::embedder(args, &cfg.heavy)?
        .load_runtime()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    rec.mark("runtime_loaded", None);
    Ok(())
}

#[cfg(not(feature = "onnx"))]
fn runtime_stage(
    _rec: &mut Recorder,
    _cfg: &Config,
    _args: &crate::ml::GuardArgs,
) -> anyhow::Result<()> {
    Ok(())
}
