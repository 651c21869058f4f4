//! [`TorchEmbedder`]: all-MiniLM-L6-v2 on libtorch, loaded on first use, unloadable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime};

use featherguard_core::{
    l2_normalize, release_free_heap, EmbedError, Embedder, Embeddings, LoadStats, ModelId, Rss,
};
use featherguard_loader::{sha256_file, SafeTensorsFile};
use featherguard_setup::{catalog, Component, Layout};
use featherguard_tokenize::{Row, TextTokenizer, TokenizeError, WindowConfig};
use tch::Kind;

use crate::arch::{EncoderShape, EncoderSpec};
use crate::model::Encoder;
use crate::{ModelMissing, TorchError};

/// Name the model reports in [`ModelId`]: the same as the ONNX backend's, so banks and heads built
/// with either backend work with both.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA device by ordinal; needs a CUDA build of libtorch and a GPU.
    Cuda(usize),
}

/// Compute precision on CUDA (the CPU always computes in f32, the weights' own type, so that
/// its tensors can stay views of the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CudaPrecision {
    #[default]
    F16,
    Bf16,
    F32,
}

impl CudaPrecision {
    fn kind(self) -> Kind {
        match self {
            CudaPrecision::F16 => Kind::Half,
            CudaPrecision::Bf16 => Kind::BFloat16,
            CudaPrecision::F32 => Kind::Float,
        }
    }
}

/// Everything the embedder needs; the defaults use the setup cache, the CPU and one thread.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchConfig {
    /// `model.safetensors` of the encoder; `None` uses the setup cache.
    pub weights: Option<PathBuf>,
    /// `tokenizer.json`; `None` uses the one next to the weights, else the setup cache.
    pub tokenizer: Option<PathBuf>,
    /// libtorch intra-op threads, set at load. libtorch keeps this number per process, not per
    /// model, so it applies to every libtorch user in the process; `None` leaves it alone.
    pub threads: Option<usize>,
    /// How long texts are cut into windows (the same defaults as the ONNX backend).
    pub windows: WindowConfig,
    /// Largest `rows x tokens` of one forward pass; bounds activation memory.
    pub max_batch_tokens: usize,
    pub device: Device,
    /// Compute precision when `device` is CUDA.
    pub cuda_precision: CudaPrecision,
    /// Sizes the checkpoint must have (all-MiniLM-L6-v2 by default).
    pub shape: EncoderShape,
    pub spec: EncoderSpec,
}

impl Default for TorchConfig {
    fn default() -> Self {
        TorchConfig {
            weights: None,
            tokenizer: None,
            threads: Some(1),
            windows: WindowConfig::default(),
            max_batch_tokens: 4096,
            device: Device::Cpu,
            cuda_precision: CudaPrecision::default(),
            shape: EncoderShape::MINILM_L6,
            spec: EncoderSpec::default(),
        }
    }
}

/// Resolved file paths.
#[derive(Debug, Clone)]
struct Files {
    weights: PathBuf,
    tokenizer: PathBuf,
    /// sha256 pinned by setup for this exact file, when it is the setup copy.
    pinned_sha256: Option<&'static str>,
}

struct Loaded {
    encoder: Encoder,
    tokenizer: TextTokenizer,
}

#[derive(Default)]
struct Slot {
    loaded: Option<Loaded>,
    stats: Option<LoadStats>,
}

/// all-MiniLM-L6-v2 on libtorch. Construction only resolves paths; the weights are mapped and the
/// tokenizer parsed on first use, and [`Embedder::unload`] unmaps them.
pub struct TorchEmbedder {
    config: TorchConfig,
    files: Result<Files, ModelMissing>,
    model: OnceLock<ModelId>,
    slot: Mutex<Slot>,
}

impl std::fmt::Debug for TorchEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchEmbedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn missing(what: &str, reason: impl std::fmt::Display) -> ModelMissing {
    ModelMissing {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn resolve(config: &TorchConfig) -> Result<Files, ModelMissing> {
    let tokenizer_next_to = |w: &Path| {
        w.parent()
            .map(|d| d.join("tokenizer.json"))
            .filter(|p| p.is_file())
    };
    match (&config.weights, &config.tokenizer) {
        (Some(w), t) => {
            if !w.is_file() {
                return Err(missing(
                    "model weights",
                    format!("{} not found", w.display()),
                ));
            }
            let tokenizer = t.clone().or_else(|| tokenizer_next_to(w)).ok_or_else(|| {
                missing(
                    "tokenizer",
                    format!("no tokenizer configured and none next to {}", w.display()),
                )
            })?;
            Ok(Files {
                weights: w.clone(),
                tokenizer,
                pinned_sha256: None,
            })
        }
        (None, t) => {
            let layout = Layout::discover().map_err(|e| missing(MODEL_NAME, e))?;
            let m = layout.find_minilm().map_err(|e| missing(MODEL_NAME, e))?;
            let pinned = catalog::spec(Component::Models)
                .files()
                .find(|f| f.dest == catalog::MINILM_SAFETENSORS)
                .map(|f| f.sha256);
            Ok(Files {
                weights: m.safetensors,
                tokenizer: t.clone().unwrap_or(m.tokenizer),
                pinned_sha256: pinned,
            })
        }
    }
}

impl TorchEmbedder {
    /// An embedder for `config`. Never fails: a missing file is reported by the first call that
    /// needs it (so a firewall can start and apply its fail-open/closed policy).
    pub fn new(config: TorchConfig) -> TorchEmbedder {
        TorchEmbedder {
            files: resolve(&config),
            config,
            model: OnceLock::new(),
            slot: Mutex::new(Slot::default()),
        }
    }

    pub fn config(&self) -> &TorchConfig {
        &self.config
    }

    fn files(&self) -> Result<&Files, TorchError> {
        self.files
            .as_ref()
            .map_err(|e| TorchError::ModelMissing(e.clone()))
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves at worst an empty slot; the data is still valid.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads now, with the typed error ([`Embedder::load`] flattens it into an [`EmbedError`]).
    pub fn try_load(&self) -> Result<(), TorchError> {
        let mut slot = self.lock();
        self.load_into(&mut slot)
    }

    /// The device and precision running now, `None` when not loaded.
    pub fn provider(&self) -> Option<String> {
        self.lock()
            .stats
            .as_ref()
            .filter(|s| s.loaded)
            .map(|s| s.provider.clone())
    }

    fn load_into(&self, slot: &mut Slot) -> Result<(), TorchError> {
        if slot.loaded.is_some() {
            return Ok(());
        }
        let files = self.files()?.clone();
        let c = &self.config;
        if c.windows.max_tokens > c.shape.max_positions {
            return Err(TorchError::Config(format!(
                "windows of {} tokens exceed the model's {} positions",
                c.windows.max_tokens, c.shape.max_positions
            )));
        }
        let (device, kind, provider) = select_device(c.device, c.cuda_precision)?;
        let before = Rss::sample().unwrap_or_default();
        let started = Instant::now();
        if let Some(n) = c.threads {
            tch::set_num_threads(n.clamp(1, i32::MAX as usize) as i32);
        }
        let (tokenizer, encoder) = std::thread::scope(|s| {
            let tok = s.spawn(|| TextTokenizer::from_file(&files.tokenizer, c.windows));
            let encoder = SafeTensorsFile::open(&files.weights)
                .map_err(TorchError::from)
                .and_then(|f| Encoder::load(Arc::new(f), c.shape, c.spec, device, kind));
            let tok = tok
                .join()
                .unwrap_or_else(|_| Err(TokenizeError::Encode("tokenizer loader panicked".into())));
            (tok, encoder)
        });
        let encoder = encoder?;
        let tokenizer = tokenizer?;
        release_free_heap();
        let after = Rss::sample().unwrap_or_default();
        slot.loaded = Some(Loaded { encoder, tokenizer });
        slot.stats = Some(LoadStats {
            loaded: true,
            loaded_at: Some(SystemTime::now()),
            load_time: started.elapsed(),
            rss_delta_bytes: after.total as i64 - before.total as i64,
            loads: slot.stats.as_ref().map_or(0, |s| s.loads) + 1,
            provider,
        });
        Ok(())
    }
}

/// The libtorch device and compute kind for a request; CUDA without a usable GPU is an error,
/// never a silent fall back to the CPU.
fn select_device(
    device: Device,
    precision: CudaPrecision,
) -> Result<(tch::Device, Kind, String), TorchError> {
    match device {
        Device::Cpu => Ok((tch::Device::Cpu, Kind::Float, "cpu".into())),
        Device::Cuda(ordinal) => {
            if !tch::Cuda::is_available() {
                return Err(TorchError::CudaUnavailable {
                    ordinal,
                    reason: "libtorch reports no usable CUDA device (no GPU, no driver, or a CPU-only libtorch)".into(),
                });
            }
            let count = tch::Cuda::device_count();
            if ordinal as i64 >= count {
                return Err(TorchError::CudaUnavailable {
                    ordinal,
                    reason: format!("only {count} CUDA device(s) present"),
                });
            }
            let kind = precision.kind();
            Ok((
                tch::Device::Cuda(ordinal),
                kind,
                format!("cuda:{ordinal} ({kind:?})"),
            ))
        }
    }
}

/// Rows per forward pass: sorted by length so padding stays small, and no chunk over `budget`
/// tokens (attention memory grows with rows x tokens²).
fn chunks(rows: &[Row], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i].ids.len());
    let budget = budget.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && (end + 1 - start) * rows[order[end]].ids.len() <= budget {
            end += 1;
        }
        out.push(order[start..end].to_vec());
        start = end;
    }
    out
}

impl Embedder for TorchEmbedder {
    fn model(&self) -> &ModelId {
        self.model.get_or_init(|| {
            let sha256 = match self.files() {
                Ok(f) => f.pinned_sha256.map(str::to_string).unwrap_or_else(|| {
                    sha256_file(&f.weights)
                        .map(|d| d.to_string())
                        .unwrap_or_else(|_| "unknown".into())
                }),
                Err(_) => "unknown".into(),
            };
            ModelId {
                name: MODEL_NAME.into(),
                sha256,
                dim: self.config.shape.hidden,
            }
        })
    }

    fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        let mut slot = self.lock();
        self.load_into(&mut slot).map_err(EmbedError::from)?;
        let Some(loaded) = slot.loaded.as_ref() else {
            return Err(EmbedError::Backend("model not loaded".into()));
        };
        let mut rows = Vec::new();
        let mut spans = Vec::with_capacity(texts.len());
        let mut skipped = Vec::with_capacity(texts.len());
        for text in texts {
            let (w, s) = loaded
                .tokenizer
                .windows(text)
                .map_err(|e| EmbedError::from(TorchError::from(e)))?;
            spans.push(rows.len()..rows.len() + w.len());
            skipped.push(s);
            rows.extend(w);
        }
        let dim = loaded.encoder.shape().hidden;
        let mut data = vec![0f32; rows.len() * dim];
        for chunk in chunks(&rows, self.config.max_batch_tokens) {
            let refs: Vec<&Row> = chunk.iter().map(|&i| &rows[i]).collect();
            let batch = loaded.tokenizer.pad_rows(&refs, Vec::new(), Vec::new());
            let out = loaded
                .encoder
                .forward(
                    &batch.input_ids,
                    &batch.attention_mask,
                    batch.rows,
                    batch.seq_len,
                )
                .map_err(EmbedError::from)?;
            for (k, &i) in chunk.iter().enumerate() {
                let v = &mut data[i * dim..(i + 1) * dim];
                v.copy_from_slice(&out[k * dim..(k + 1) * dim]);
                l2_normalize(v);
            }
        }
        Embeddings::new(dim, data, spans, skipped)
    }

    fn load(&self) -> Result<(), EmbedError> {
        self.try_load().map_err(EmbedError::from)
    }

    fn unload(&self) -> bool {
        let mut slot = self.lock();
        let was = slot.loaded.take().is_some();
        if was {
            release_free_heap();
            if let Some(s) = slot.stats.as_mut() {
                s.loaded = false;
            }
        }
        was
    }

    fn load_stats(&self) -> Option<LoadStats> {
        self.lock().stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_token_budget_and_cover_every_row() {
        let rows: Vec<Row> = [3usize, 10, 5, 10, 2]
            .iter()
            .map(|&n| Row { ids: vec![1; n] })
            .collect();
        let c = chunks(&rows, 20);
        let mut seen: Vec<usize> = c.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        for chunk in &c {
            let longest = chunk.iter().map(|&i| rows[i].ids.len()).max().unwrap();
            assert!(chunk.len() == 1 || chunk.len() * longest <= 20);
        }
    }

    #[test]
    fn missing_weights_name_setup() {
        let e = TorchEmbedder::new(TorchConfig {
            weights: Some("/nonexistent/model.safetensors".into()),
            ..Default::default()
        });
        let err = e.load().unwrap_err().to_string();
        assert!(err.contains("featherguard setup"), "{err}");
    }
}
