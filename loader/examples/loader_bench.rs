//! Measurement driver for `scripts/loader/compare.py` (one process per measurement, so peak
//! RSS is per method). Prints one JSON object per invocation.
//!
//! ```text
//! loader_bench gen [DIR]                  generate the synthetic checkpoints, print their paths
//! loader_bench materialize PATH [opts]    open + materialize all; opts: --threads N --convert f32|bf16|f16
//!                                         --fill auto|zero|fresh --switch-below GB_PER_S
//!                                         --no-huge-pages
//!                                         --prefault window|lazy|upfront
//!                                         --keep-source --populate --chunk BYTES
//!                                         --readahead CHUNKS --mmap
//! loader_bench first-view PATH            median time from open to the first tensor view
//! loader_bench memcpy PATH                memcpy of the checkpoint's bytes into pre-touched memory
//! loader_bench fresh PATH                 time to fault in fresh memory of the checkpoint's size
//!                                         (THP / 4 KiB)
//! loader_bench evict PATH                 drop the checkpoint's files from the page cache
//! ```

#[path = "../benches/synth/mod.rs"]
mod synth;

use std::time::Instant;

use featherguard_loader::{Checkpoint, Dtype, MaterializeOptions, PageFill, Prefault, SourceRead};

fn main() {
    if let Err(e) = run() {
        eprintln!("loader_bench: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .ok_or("usage: loader_bench gen|materialize|first-view|memcpy|evict ...")?;
    let path = || rest.first().cloned().ok_or("missing PATH");
    let flag = |name: &str| rest.iter().any(|a| a == name);
    let value = |name: &str| {
        rest.iter()
            .position(|a| a == name)
            .and_then(|i| rest.get(i + 1))
            .cloned()
    };
    match cmd.as_str() {
        "gen" => {
            let dir = rest
                .first()
                .map(Into::into)
                .unwrap_or_else(synth::bench_dir);
            let (single, index) = synth::ensure(&dir)?;
            println!(
                "{}",
                serde_json::json!({"single": single, "sharded": index})
            );
        }
        "materialize" => {
            let convert = match value("--convert").as_deref() {
                None => None,
                Some("f32") => Some(Dtype::F32),
                Some("bf16") => Some(Dtype::BF16),
                Some("f16") => Some(Dtype::F16),
                Some(other) => return Err(format!("unknown --convert {other}").into()),
            };
            let defaults = MaterializeOptions::default();
            let opts = MaterializeOptions {
                read: if flag("--mmap") {
                    SourceRead::Mmap
                } else {
                    SourceRead::Pread
                },
                threads: value("--threads")
                    .map(|t| t.parse())
                    .transpose()?
                    .unwrap_or(0),
                convert,
                page_fill: match value("--fill").as_deref() {
                    None | Some("auto") => PageFill::Auto,
                    Some("zero") => PageFill::ZeroThenCopy,
                    Some("fresh") => PageFill::CopyIntoFresh,
                    Some(other) => return Err(format!("unknown --fill {other}").into()),
                },
                auto_switch_gb_per_s: value("--switch-below")
                    .map(|t| t.parse())
                    .transpose()?
                    .unwrap_or(defaults.auto_switch_gb_per_s),
                huge_pages: !flag("--no-huge-pages"),
                prefault: match value("--prefault").as_deref() {
                    None | Some("window") => Prefault::PerWindow,
                    Some("lazy") => Prefault::Lazy,
                    Some("upfront") => Prefault::UpFront,
                    Some(other) => return Err(format!("unknown --prefault {other}").into()),
                },
                release_source: !flag("--keep-source"),
                populate_source: flag("--populate"),
                chunk_bytes: value("--chunk")
                    .map(|t| t.parse())
                    .transpose()?
                    .unwrap_or(defaults.chunk_bytes),
                readahead_chunks: value("--readahead")
                    .map(|t| t.parse())
                    .transpose()?
                    .unwrap_or(defaults.readahead_chunks),
                probe_page_cache: false,
            };
            let started = Instant::now();
            let ckpt = Checkpoint::open(path()?)?;
            let opened = started.elapsed().as_secs_f64();
            // Probed outside the timed span: mincore over 2 GB of mapping costs tens of ms,
            // which is bookkeeping for the cold runs, not part of loading.
            let resident = ckpt.page_cache_residency()?;
            let before = Instant::now();
            let m = ckpt.materialize_all(&opts)?;
            let total = opened + before.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "total_secs": total,
                    "open_secs": opened,
                    "report": m.report(),
                    "page_cache_resident_before": resident,
                    "peak_rss_bytes": peak_rss_bytes(),
                })
            );
        }
        "first-view" => {
            let p = path()?;
            let mut times = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                let ckpt = Checkpoint::open(&p)?;
                let name = ckpt.files()[0].header().tensors()[0].name.clone();
                let view = ckpt.tensor(&name)?;
                std::hint::black_box(view.data().as_ptr());
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({"median_secs": times[times.len() / 2], "min_secs": times[0]})
            );
        }
        "memcpy" => {
            let mut src = Vec::new();
            for file in Checkpoint::open(path()?)?.files() {
                src.extend_from_slice(&std::fs::read(file.path())?);
            }
            let mut dst = vec![1u8; src.len()];
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                dst.copy_from_slice(&src);
                std::hint::black_box(dst.as_ptr());
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({"median_secs": times[times.len() / 2], "bytes": src.len()})
            );
        }
        "fresh" => {
            // The floor under any owned copy: faulting in fresh anonymous memory of the file's
            // size (2 threads, MADV_POPULATE_WRITE), with and without transparent huge pages.
            let ckpt = Checkpoint::open(path()?)?;
            let len = ckpt.files().iter().map(|f| f.len()).sum();
            let mut out = serde_json::Map::new();
            for (label, huge) in [("huge_secs", true), ("small_secs", false)] {
                out.insert(label.into(), populate_fresh(len, huge)?.into());
            }
            println!("{}", serde_json::Value::Object(out));
        }
        "evict" => {
            Checkpoint::open(path()?)?.evict_page_cache()?;
            println!("{{}}");
        }
        other => return Err(format!("unknown command {other}").into()),
    }
    Ok(())
}

fn populate_fresh(len: usize, huge: bool) -> std::io::Result<f64> {
    // SAFETY: a private anonymous mapping used only here and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        if huge {
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
        }
        let base = p as usize;
        let half = (len / 2) & !4095;
        let t = Instant::now();
        std::thread::scope(|s| {
            for (start, n) in [(0, half), (half, len - half)] {
                s.spawn(move || {
                    libc::madvise(
                        (base + start) as *mut libc::c_void,
                        n,
                        libc::MADV_POPULATE_WRITE,
                    )
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        libc::munmap(p, len);
        Ok(secs)
    }
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
