//! `featherguard embed`: print the embedding of each input (one JSON object per line).

use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use featherguard::onnx::{Device, OnnxConfig, OnnxEmbedder, Precision};
use featherguard::Embedder;
use serde_json::{json, Value};

use crate::ml::DeviceArg;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// ONNX Runtime (all-MiniLM-L6-v2, fp32).
    Onnx,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// fp32 graph over model.safetensors (what banks and heads are built with).
    Fp32,
    /// The int8 model.onnx from PyPI (for cross-checks).
    Int8,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmbedFormat {
    Json,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Each output line: {\"id\": ..., \"embedding\": [...], \"windows\": N, \"model\": {\"name\", \"sha256\", \"dim\"}}.
For a text longer than one model window the embedding is the normalized mean of its windows.

Examples:
  featherguard embed \"hello world\" \"bonjour le monde\"
  featherguard embed --input prompts.txt                 one text per line (id = line number)
  featherguard embed --jsonl --input items.jsonl         {\"id\": ..., \"text\": ...} per line")]
pub struct EmbedArgs {
    /// Texts to embed (id = position, from 0).
    #[arg(value_name = "TEXT")]
    texts: Vec<String>,

    /// Read texts from a file, one per line (`-` = stdin).
    #[arg(long, short, value_name = "PATH", conflicts_with = "texts")]
    input: Option<PathBuf>,

    /// Each line is a JSON object with `text`; its `id` is echoed.
    #[arg(long)]
    jsonl: bool,

    #[arg(long, value_enum, default_value_t = Backend::Onnx)]
    backend: Backend,

    /// Which form of the model the onnx backend runs.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,

    #[arg(long, short, value_enum, default_value_t = EmbedFormat::Json)]
    format: EmbedFormat,

    /// Texts per model call.
    #[arg(long, default_value_t = 32)]
    batch: usize,

    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,

    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
}

/// The embedder the CLI's ML commands share.
pub fn embedder(threads: usize, device: DeviceArg) -> anyhow::Result<Arc<dyn Embedder>> {
    let device = match device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => Device::Cuda(0),
    };
    Ok(Arc::new(OnnxEmbedder::new(OnnxConfig {
        threads,
        device,
        ..Default::default()
    })))
}

/// A progress bar on stderr when it is a terminal.
pub struct Bar {
    enabled: bool,
    last: Instant,
    label: &'static str,
}

impl Bar {
    pub fn new(label: &'static str) -> Bar {
        let now = Instant::now();
        Bar {
            enabled: io::stderr().is_terminal(),
            last: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
            label,
        }
    }

    pub fn update(&mut self, done: usize, total: usize) {
        if !self.enabled || (self.last.elapsed() < Duration::from_millis(100) && done < total) {
            return;
        }
        self.last = Instant::now();
        let frac = done as f64 / total.max(1) as f64;
        let filled = (frac * 30.0) as usize;
        eprint!(
            "\r{} [{}{}] {done}/{total}",
            self.label,
            "=".repeat(filled),
            " ".repeat(30 - filled)
        );
        if done >= total {
            eprintln!();
        }
    }
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let Backend::Onnx = args.backend;
    let EmbedFormat::Json = args.format;
    let embedder: Arc<dyn Embedder> = match args.precision {
        PrecisionArg::Fp32 => embedder(args.threads, args.device)?,
        PrecisionArg::Int8 => Arc::new(OnnxEmbedder::new(OnnxConfig {
            threads: args.threads,
            precision: Precision::Int8,
            ..Default::default()
        })),
    };
    let model = embedder.model().clone();
    let mut sink = Sink {
        embedder: embedder.as_ref(),
        model: json!({ "name": model.name, "sha256": model.sha256, "dim": model.dim }),
        out: BufWriter::new(io::stdout().lock()),
        pending: Vec::new(),
        batch: args.batch.max(1),
    };
    if !args.texts.is_empty() {
        for (i, t) in args.texts.iter().enumerate() {
            sink.push(json!(i), t.clone())?;
        }
    } else {
        let reader: Box<dyn BufRead> = match args.input.as_deref() {
            None => Box::new(io::stdin().lock()),
            Some(p) if p.as_os_str() == "-" => Box::new(io::stdin().lock()),
            Some(p) => Box::new(BufReader::new(
                std::fs::File::open(p)
                    .with_context(|| format!("{}: cannot open input", p.display()))?,
            )),
        };
        // Streamed: at most one batch of texts is held at a time.
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("line {}: not valid UTF-8", n + 1))?;
            if args.jsonl {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&line)
                    .with_context(|| format!("line {}: invalid JSON", n + 1))?;
                let text = v
                    .get("text")
                    .and_then(Value::as_str)
                    .with_context(|| format!("line {}: missing string field \"text\"", n + 1))?;
                sink.push(
                    v.get("id").cloned().unwrap_or(json!(n + 1)),
                    text.to_string(),
                )?;
            } else {
                sink.push(json!(n + 1), line)?;
            }
        }
    }
    sink.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Embeds texts a batch at a time and writes one JSON line per text, in input order.
struct Sink<'a, W: Write> {
    embedder: &'a dyn Embedder,
    model: Value,
    out: W,
    pending: Vec<(Value, String)>,
    batch: usize,
}

impl<W: Write> Sink<'_, W> {
    fn push(&mut self, id: Value, text: String) -> anyhow::Result<()> {
        self.pending.push((id, text));
        if self.pending.len() >= self.batch {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let texts: Vec<&str> = self.pending.iter().map(|(_, t)| t.as_str()).collect();
        let emb = self
            .embedder
            .embed(&texts)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, (id, _)) in self.pending.iter().enumerate() {
            let v = json!({
                "id": id,
                "embedding": emb.pooled(i),
                "windows": emb.windows(i).len(),
                "skipped_windows": emb.skipped_windows(i),
                "model": self.model,
            });
            serde_json::to_writer(&mut self.out, &v)?;
            writeln!(self.out)?;
        }
        self.pending.clear();
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.write_pending()?;
        self.out.flush()?;
        Ok(())
    }
}
