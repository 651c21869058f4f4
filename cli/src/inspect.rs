//! `featherguard inspect`: list the tensors, totals and metadata of a safetensors checkpoint.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use featherguard_loader::{Checkpoint, CheckpointSource, TensorView};
use serde_json::{json, Value};

/// Output format of `inspect` and `load-bench`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// List tensors (name, dtype, shape, bytes), totals and metadata. Maps the files; reads no
/// tensor data.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model directory.
    pub path: PathBuf,
    /// Output format: `text` for people, `json` for one JSON object.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `featherguard inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    // LoadError messages already name the file and the fix.
    let ckpt = Checkpoint::open(&args.path)?;
    let views = ckpt.tensors()?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &inspect_json(&ckpt, &views))?;
            writeln!(out)?;
        }
        Format::Text => write_text(&mut out, &ckpt, &views)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Header metadata of every file, first file winning on a key clash.
fn file_metadata(ckpt: &Checkpoint) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    for f in ckpt.files() {
        for (k, v) in f.header().metadata() {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    merged
}

fn dtype_totals(views: &[TensorView<'_>]) -> BTreeMap<&'static str, (usize, u64)> {
    let mut totals = BTreeMap::new();
    for v in views {
        let e = totals.entry(v.dtype().as_str()).or_insert((0usize, 0u64));
        e.0 += 1;
        e.1 += v.data().len() as u64;
    }
    totals
}

fn kind(ckpt: &Checkpoint) -> &'static str {
    match ckpt.source() {
        CheckpointSource::Single(_) => "single",
        CheckpointSource::Sharded(_) => "sharded",
    }
}

fn inspect_json(ckpt: &Checkpoint, views: &[TensorView<'_>]) -> Value {
    let tensors: Vec<Value> = views
        .iter()
        .map(|v| {
            json!({
                "name": v.name(),
                "dtype": v.dtype().as_str(),
                "shape": v.shape(),
                "bytes": v.data().len(),
                "file": v.file().file_name().map(|n| n.to_string_lossy()),
            })
        })
        .collect();
    let dtypes: serde_json::Map<String, Value> = dtype_totals(views)
        .into_iter()
        .map(|(d, (n, b))| (d.to_owned(), json!({"tensors": n, "bytes": b})))
        .collect();
    json!({
        "path": ckpt.path(),
        "kind": kind(ckpt),
        "files": ckpt.files().iter().map(|f| f.path()).collect::<Vec<_>>(),
        "total_tensors": views.len(),
        "total_bytes": ckpt.data_bytes(),
        "dtypes": dtypes,
        "metadata": file_metadata(ckpt),
        "index_metadata": ckpt.index_metadata(),
        "tensors": tensors,
    })
}

fn write_text(
    out: &mut impl Write,
    ckpt: &Checkpoint,
    views: &[TensorView<'_>],
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} ({}, {} file{})",
        ckpt.path().display(),
        kind(ckpt),
        ckpt.files().len(),
        if ckpt.files().len() == 1 { "" } else { "s" }
    )?;
    let name_w = views
        .iter()
        .map(|v| v.name().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let shapes: Vec<String> = views.iter().map(|v| format!("{:?}", v.shape())).collect();
    let shape_w = shapes.iter().map(String::len).max().unwrap_or(5).max(5);
    writeln!(
        out,
        "{:name_w$}  {:7}  {:shape_w$}  {:>14}",
        "NAME", "DTYPE", "SHAPE", "BYTES"
    )?;
    for (v, shape) in views.iter().zip(&shapes) {
        writeln!(
            out,
            "{:name_w$}  {:7}  {:shape_w$}  {:>14}",
            v.name(),
            v.dtype().as_str(),
            shape,
            v.data().len()
        )?;
    }
    writeln!(
        out,
        "total: {} tensors, {} bytes ({:.1} MiB)",
        views.len(),
        ckpt.data_bytes(),
        ckpt.data_bytes() as f64 / (1u64 << 20) as f64
    )?;
    for (d, (n, b)) in dtype_totals(views) {
        writeln!(out, "  {d}: {n} tensors, {b} bytes")?;
    }
    for (title, map) in [
        ("metadata", file_metadata(ckpt)),
        ("index metadata", ckpt.index_metadata().clone()),
    ] {
        if !map.is_empty() {
            writeln!(out, "{title}:")?;
            for (k, v) in map {
                writeln!(out, "  {k} = {v}")?;
            }
        }
    }
    Ok(())
}
