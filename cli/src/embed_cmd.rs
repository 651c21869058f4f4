//! `featherguard embed`: print the embedding of each input (one JSON object per line).

use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use featherguard::Embedder;
use serde_json::{json, Value};

use crate::input::Inputs;
use crate::ml::DeviceArg;

/// Which runtime computes the embeddings. Both run all-MiniLM-L6-v2 from the same weights file and
/// report the same model id, so banks and heads built with one work with the other.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// ONNX Runtime (all-MiniLM-L6-v2, fp32; needs the `onnx` feature).
    Onnx,
    /// libtorch (the same model, weights used in place from the mapped file; needs the `torch` feature).
    Torch,
}

impl Backend {
    /// The default of this build: ONNX Runtime when compiled in, else libtorch.
    pub const fn preferred() -> Backend {
        if cfg!(feature = "onnx") {
            Backend::Onnx
        } else {
            Backend::Torch
        }
    }
}

/// How the ML commands that embed a corpus (`embed`, `bank build`, `train`, `crossval`) run the model.
#[derive(Args, Debug, Clone)]
pub struct EmbedOpts {
    #[arg(long, value_enum, default_value_t = Backend::preferred())]
    pub backend: Backend,
    /// Texts per model call.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

impl EmbedOpts {
    /// The fp32 model on the chosen backend, with the default window bound.
    pub fn embedder(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        embedder_with(self.backend, self.threads, self.device, None)
    }
}

/// Bound on the windows embedded per text (the config's `[heavy]` section); `None` in
/// [`embedder_with`] keeps the backend's default.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WindowBound {
    pub max_windows: usize,
    /// Refuse a text above the bound instead of sampling its windows.
    pub reject: bool,
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
  featherguard embed \"hello world\" \"bonjour le monde\"    id = position, from 0
  featherguard embed --input prompts.txt                 one text per line (id = line number)
  featherguard embed --jsonl --input items.jsonl         {\"id\": ..., \"text\": ...} per line")]
pub struct EmbedArgs {
    #[command(flatten)]
    inputs: Inputs,

    /// Which form of the model the onnx backend runs (int8: onnx only).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,

    #[arg(long, short, value_enum, default_value_t = EmbedFormat::Json)]
    format: EmbedFormat,

    #[command(flatten)]
    embed: EmbedOpts,
}

/// The embedder the CLI's ML commands share, with a bound on windows per text (`None`: the
/// backend's default).
pub fn embedder_with(
    backend: Backend,
    threads: usize,
    device: DeviceArg,
    windows: Option<WindowBound>,
) -> anyhow::Result<Arc<dyn Embedder>> {
    if let Some(w) = windows {
        anyhow::ensure!(w.max_windows >= 1, "heavy.max_windows must be at least 1");
    }
    let windows = window_config(windows);
    match backend {
        Backend::Onnx => onnx_embedder(threads, device, windows),
        Backend::Torch => torch_embedder(threads, device, windows),
    }
}

// Both backends re-export the one tokenizer crate's types.
#[cfg(feature = "onnx")]
use featherguard::onnx::{Overflow, WindowConfig};
#[cfg(all(feature = "torch", not(feature = "onnx")))]
use featherguard::torch::{Overflow, WindowConfig};

fn window_config(bound: Option<WindowBound>) -> WindowConfig {
    match bound {
        None => WindowConfig::default(),
        Some(b) => WindowConfig {
            max_windows: b.max_windows,
            overflow: if b.reject {
                Overflow::Reject
            } else {
                Overflow::Sample
            },
            ..WindowConfig::default()
        },
    }
}

#[cfg(feature = "onnx")]
fn onnx_embedder(
    threads: usize,
    device: DeviceArg,
    windows: WindowConfig,
) -> anyhow::Result<Arc<dyn Embedder>> {
    use featherguard::onnx::{Device, OnnxConfig, OnnxEmbedder};
    let device = match device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => Device::Cuda(0),
    };
    Ok(Arc::new(OnnxEmbedder::new(OnnxConfig {
        threads,
        device,
        windows,
        ..Default::default()
    })))
}

#[cfg(not(feature = "onnx"))]
fn onnx_embedder(
    _threads: usize,
    _device: DeviceArg,
    _windows: WindowConfig,
) -> anyhow::Result<Arc<dyn Embedder>> {
    anyhow::bail!(
        "--backend onnx needs a featherguard built with the `onnx` feature; this build has `--backend torch`"
    )
}

#[cfg(feature = "torch")]
fn torch_embedder(
    threads: usize,
    device: DeviceArg,
    windows: WindowConfig,
) -> anyhow::Result<Arc<dyn Embedder>> {
    use featherguard::torch::{Device, TorchConfig, TorchEmbedder};
    let device = match device {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => Device::Cuda(0),
    };
    Ok(Arc::new(TorchEmbedder::new(TorchConfig {
        threads: Some(threads),
        device,
        windows,
        ..Default::default()
    })))
}

#[cfg(not(feature = "torch"))]
fn torch_embedder(
    _threads: usize,
    _device: DeviceArg,
    _windows: WindowConfig,
) -> anyhow::Result<Arc<dyn Embedder>> {
    anyhow::bail!(
        "--backend torch needs a featherguard built with the `torch` feature (and libtorch: `featherguard setup --only torch`)"
    )
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
    let EmbedFormat::Json = args.format;
    let embedder: Arc<dyn Embedder> = match args.precision {
        PrecisionArg::Fp32 => args.embed.embedder()?,
        PrecisionArg::Int8 => int8_embedder(args)?,
    };
    let model = embedder.model().clone();
    let mut sink = Sink {
        embedder: embedder.as_ref(),
        model: json!({ "name": model.name, "sha256": model.sha256, "dim": model.dim }),
        out: BufWriter::new(io::stdout().lock()),
        pending: Vec::new(),
        batch: args.embed.batch.max(1),
    };
    if !args.inputs.texts.is_empty() {
        for (i, t) in args.inputs.texts.iter().enumerate() {
            sink.push(json!(i), t.clone())?;
        }
    } else {
        // Streamed: at most one batch of texts is held at a time.
        for (n, line) in args.inputs.reader()?.lines().enumerate() {
            let line = line.with_context(|| format!("line {}: not valid UTF-8", n + 1))?;
            if args.inputs.jsonl {
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

/// The int8 model.onnx exists only for ONNX Runtime.
#[cfg(feature = "onnx")]
fn int8_embedder(args: &EmbedArgs) -> anyhow::Result<Arc<dyn Embedder>> {
    use featherguard::onnx::{OnnxConfig, OnnxEmbedder, Precision};
    anyhow::ensure!(
        args.embed.backend == Backend::Onnx,
        "--precision int8 is the int8 ONNX model: use it with --backend onnx"
    );
    Ok(Arc::new(OnnxEmbedder::new(OnnxConfig {
        threads: args.embed.threads,
        precision: Precision::Int8,
        ..Default::default()
    })))
}

#[cfg(not(feature = "onnx"))]
fn int8_embedder(_args: &EmbedArgs) -> anyhow::Result<Arc<dyn Embedder>> {
    anyhow::bail!("--precision int8 is the int8 ONNX model: it needs the `onnx` feature")
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
