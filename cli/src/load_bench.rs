//! `featherguard load-bench`: load a checkpoint the way the ML guards do and report the cost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use featherguard_loader::{
    Checkpoint, Dtype, LoadReport, MaterializeOptions, OpenOptions, PageFill, SourceRead,
};
use serde_json::json;

use crate::inspect::Format;

/// What `load-bench` measures.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Open and map, then take a zero-copy view of every tensor (header to views).
    Map,
    /// Materialize owned, aligned copies of every tensor, dtypes unchanged.
    Copy,
    /// Materialize every tensor converting F16/BF16/F32 to `--to`.
    Convert,
}

/// Conversion target of `--mode convert`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    F32,
    Bf16,
    F16,
}

/// Source reads of `--read`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Read {
    Pread,
    Mmap,
}

/// How fresh destination pages get their bytes (`--fill`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fill {
    /// Zero-then-copy while fresh pages fault in fast, copy-into-fresh once they do not.
    Auto,
    /// The kernel zeroes each page on first touch, then the copy overwrites it.
    ZeroThenCopy,
    /// Pages created already holding their bytes (userfaultfd), where the kernel allows it.
    CopyIntoFresh,
}

/// Load a checkpoint (map, copy or convert) and report files, tensors, bytes, time, GB/s.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadBenchArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model directory.
    pub path: PathBuf,
    /// map: views only; copy: owned copies; convert: owned copies converted to `--to`.
    #[arg(long, value_enum, default_value_t = Mode::Copy)]
    pub mode: Mode,
    /// Conversion target for `--mode convert`.
    #[arg(long, value_enum, default_value_t = Target::F32)]
    pub to: Target,
    /// Worker threads; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Runs; each is reported, and the median wall time summarized.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Drop the files from the page cache before each run (posix_fadvise; no root needed).
    #[arg(long)]
    pub cold: bool,
    /// Do not ask for transparent huge pages on the destination.
    #[arg(long)]
    pub no_huge_pages: bool,
    /// How fresh destination pages get their bytes (the report says what actually ran).
    #[arg(long, value_enum, default_value_t = Fill::Auto)]
    pub fill: Fill,
    /// How materialization reads: `pread` into the destination (no source pages mapped), or
    /// copy out of the file mapping, releasing consumed pages unless `--keep-source`.
    #[arg(long, value_enum, default_value_t = Read::Pread)]
    pub read: Read,
    /// With `--read mmap`: keep consumed source pages mapped instead of releasing them.
    #[arg(long)]
    pub keep_source: bool,
    /// Output format: `text`, or `json` (one object with every run's report).
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `featherguard load-bench`.
pub fn run(args: &LoadBenchArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for _ in 0..args.repeat {
        if args.cold {
            Checkpoint::open(&args.path)?.evict_page_cache()?;
        }
        reports.push(run_once(args)?);
    }
    let mut walls: Vec<f64> = reports.iter().map(|r| r.wall_secs).collect();
    walls.sort_by(f64::total_cmp);
    let median = walls[walls.len() / 2];
    let peak_rss = peak_rss_bytes();
    match args.format {
        Format::Json => {
            let out = json!({
                "path": args.path,
                "mode": format!("{:?}", args.mode).to_lowercase(),
                "median_wall_secs": median,
                "median_gb_per_s": reports[0].bytes as f64 / median / 1e9,
                "peak_rss_bytes": peak_rss,
                "runs": reports,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            for (i, r) in reports.iter().enumerate() {
                println!(
                    "run {}: {:?} {} tensors from {} file(s), {} bytes in {:.3} ms = {:.2} GB/s \
                     ({} threads, huge pages: {}, fill: {}, page cache before: {})",
                    i + 1,
                    r.method,
                    r.tensors,
                    r.files.len(),
                    r.bytes,
                    r.wall_secs * 1e3,
                    r.gb_per_s(),
                    r.threads,
                    r.huge_pages,
                    r.page_fill.map_or("none".into(), |f| format!(
                        "{f:?}, {:.0} MB created filled",
                        r.fresh_fill_bytes as f64 / 1e6
                    )),
                    r.page_cache_resident
                        .map_or("unknown".into(), |f| format!("{:.0}%", f * 100.0)),
                );
            }
            println!(
                "median {:.3} ms; peak RSS {}",
                median * 1e3,
                peak_rss.map_or("unknown".into(), |b| format!(
                    "{:.1} MiB",
                    b as f64 / 1048576.0
                ))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_once(args: &LoadBenchArgs) -> anyhow::Result<LoadReport> {
    // Probe the page cache (mincore over every file) before the clock starts: it is O(file).
    let resident = Checkpoint::open(&args.path)?.page_cache_residency().ok();
    let started = Instant::now();
    let open = OpenOptions {
        threads: args.threads,
        ..Default::default()
    };
    let ckpt = Checkpoint::open_with(&args.path, &open)?;
    if args.mode == Mode::Map {
        let views = ckpt.tensors()?;
        let mut report = ckpt.open_report().clone();
        report.tensors = views.len();
        report.wall_secs = started.elapsed().as_secs_f64();
        report.page_cache_resident = resident;
        return Ok(report);
    }
    let opts = MaterializeOptions {
        read: match args.read {
            Read::Pread => SourceRead::Pread,
            Read::Mmap => SourceRead::Mmap,
        },
        threads: args.threads,
        convert: (args.mode == Mode::Convert).then_some(match args.to {
            Target::F32 => Dtype::F32,
            Target::Bf16 => Dtype::BF16,
            Target::F16 => Dtype::F16,
        }),
        huge_pages: !args.no_huge_pages,
        page_fill: match args.fill {
            Fill::Auto => PageFill::Auto,
            Fill::ZeroThenCopy => PageFill::ZeroThenCopy,
            Fill::CopyIntoFresh => PageFill::CopyIntoFresh,
        },
        release_source: !args.keep_source,
        ..Default::default()
    };
    let m = ckpt.materialize_all(&opts)?;
    let mut report = m.report().clone();
    report.page_cache_resident = resident;
    // Wall time from the open, so a run counts header parsing and mapping too.
    report.wall_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Peak resident set size of this process (VmHWM), Linux only.
fn peak_rss_bytes() -> Option<u64> {
    featherguard::ProcStatus::read().map(|s| s.peak)
}
