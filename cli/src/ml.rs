//! `--guards`: which guards a scan or eval runs, and building the firewall with them. The ML
//! guards (similarity, classifier, topic) need the `onnx` or `torch` feature; they are heavy guard
//! slots governed by the config's `[heavy]` and `[memory]` sections (lazy load, idle unload, budget).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use featherguard::{Config, Firewall};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuardKind {
    /// The pattern engine (rules).
    Pattern,
    /// kNN against the exemplar bank (onnx feature).
    Similarity,
    /// The trained classifier head (onnx feature).
    Classifier,
    /// The topic fence from `--topics` (onnx feature).
    Topic,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Args, Debug, Clone)]
pub struct GuardArgs {
    /// Guards to run, comma-separated, in order: pattern, similarity, classifier, topic.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pattern")]
    pub guards: Vec<GuardKind>,

    /// Exemplar bank for `similarity` (default: the bank shipped with featherguard).
    #[arg(long, value_name = "BANK.safetensors")]
    pub bank: Option<PathBuf>,

    /// Classifier head for `classifier` (default: the head shipped with featherguard).
    #[arg(long, value_name = "HEAD.safetensors")]
    pub head: Option<PathBuf>,

    /// Topic fence for `topic` (TOML: allowed/banned topics, see docs/guards.md).
    #[arg(long, value_name = "TOPICS.toml")]
    pub topics: Option<PathBuf>,

    /// Intra-op threads of the embedding model.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ml_threads: usize,

    /// Where the embedding model runs (cuda needs a build with the `cuda` feature).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,

    /// Runtime of the embedding model (both run the same model; banks and heads work with either).
    #[cfg(any(feature = "onnx", feature = "torch"))]
    #[arg(long, value_enum, default_value_t = crate::embed_cmd::Backend::preferred())]
    pub backend: crate::embed_cmd::Backend,
}

impl GuardArgs {
    fn wants_ml(&self) -> bool {
        self.guards.iter().any(|g| *g != GuardKind::Pattern)
    }
}

/// The firewall for `cfg` with the selected guards.
pub fn build_firewall(cfg: &Config, args: &GuardArgs) -> anyhow::Result<Firewall> {
    let mut fw = if args.guards.contains(&GuardKind::Pattern) {
        crate::build_firewall(cfg)?
    } else {
        Firewall::new(Vec::new(), cfg.policy.clone(), cfg.limits.clone())
    };
    if args.wants_ml() {
        add_ml_guards(&mut fw, cfg, args)?;
    }
    Ok(fw)
}

#[cfg(not(any(feature = "onnx", feature = "torch")))]
fn add_ml_guards(_fw: &mut Firewall, _cfg: &Config, args: &GuardArgs) -> anyhow::Result<()> {
    let names: Vec<String> = args
        .guards
        .iter()
        .filter(|g| **g != GuardKind::Pattern)
        .map(|g| format!("{g:?}").to_lowercase())
        .collect();
    anyhow::bail!(
        "guards {} need a featherguard built with the `onnx` or `torch` feature",
        names.join(", ")
    )
}

/// The embedding model every ML guard of a CLI command shares, with the `[heavy]` window bound:
/// the one place a backend is chosen (the memory diagnostic measures this same constructor).
#[cfg(any(feature = "onnx", feature = "torch"))]
pub fn embedder(
    args: &GuardArgs,
    heavy: &featherguard::HeavyConfig,
) -> anyhow::Result<std::sync::Arc<dyn featherguard::Embedder>> {
    use featherguard::WindowOverflow;

    crate::embed_cmd::embedder_with(
        args.backend,
        args.ml_threads,
        args.device,
        Some(crate::embed_cmd::WindowBound {
            max_windows: heavy.max_windows,
            reject: heavy.window_overflow == WindowOverflow::Reject,
        }),
    )
}

/// Adds each selected ML guard as a heavy guard slot: loaded on first use (load time and RSS delta
/// recorded), unloaded after `[heavy] idle_unload_secs`, refused over the memory budget's hard
/// threshold, run as the cascade says. Files are checked now, so a wrong path fails at start, but
/// nothing heavy is loaded before a scan needs it.
#[cfg(any(feature = "onnx", feature = "torch"))]
fn add_ml_guards(fw: &mut Firewall, cfg: &Config, args: &GuardArgs) -> anyhow::Result<()> {
    use std::sync::Arc;

    use anyhow::Context;
    use featherguard::semantic::{
        Bank, Head, HeadGuard, LeasedGuard, SemanticError, SharedModel, SimilarityGuard,
        TopicConfig, TopicGuard,
    };
    use featherguard::{Guard, GuardError, GuardLoader, GuardSlot};

    // One model for all ML guards, one embedding pass per input (the memo inside SharedModel);
    // it unloads when the last guard slot using it does.
    let model = SharedModel::new(embedder(args, &cfg.heavy)?);
    let file_error = |guard: &'static str| {
        move |e: SemanticError| GuardError::Unavailable {
            guard: guard.into(),
            what: "its data file".into(),
            reason: e.to_string(),
            fix: "rebuild it (featherguard bank build / train) or pass another path".into(),
        }
    };
    let leased = |model: &Arc<SharedModel>, guard: &str, build: Arc<dyn Guard>| {
        let lease = model.lease().map_err(|e| e.into_guard_error(guard))?;
        Ok::<Arc<dyn Guard>, GuardError>(Arc::new(LeasedGuard::new(build, lease)))
    };
    for g in &args.guards {
        let (name, loader): (&str, GuardLoader) = match g {
            GuardKind::Pattern => continue,
            GuardKind::Similarity => {
                let path: PathBuf = crate::defaults::bank(args.bank.as_deref())?;
                // Checked now (a mapping and a header read), opened again by each load.
                Bank::open(&path)?;
                let model = model.clone();
                (
                    "similarity",
                    Box::new(move || {
                        let bank = Bank::open(&path).map_err(file_error("similarity"))?;
                        let guard = SimilarityGuard::new(model.embedder(), Arc::new(bank));
                        leased(&model, "similarity", Arc::new(guard))
                    }),
                )
            }
            GuardKind::Classifier => {
                let path: PathBuf = crate::defaults::head(args.head.as_deref())?;
                Head::open(&path)?;
                let model = model.clone();
                (
                    "classifier",
                    Box::new(move || {
                        let head = Head::open(&path).map_err(file_error("classifier"))?;
                        let guard = HeadGuard::new(model.embedder(), Arc::new(head));
                        leased(&model, "classifier", Arc::new(guard))
                    }),
                )
            }
            GuardKind::Topic => {
                let path = args
                    .topics
                    .as_ref()
                    .context("the topic guard needs --topics TOPICS.toml")?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read", path.display()))?;
                let config: TopicConfig = toml::from_str(&text)
                    .with_context(|| format!("{}: invalid topic file", path.display()))?;
                let model = model.clone();
                (
                    "topic",
                    Box::new(move || {
                        let guard = TopicGuard::new(model.embedder(), config.clone());
                        leased(&model, "topic", Arc::new(guard))
                    }),
                )
            }
        };
        let slot = GuardSlot::new(name, loader, cfg.heavy.slot_options(), fw.memory().clone());
        let slot = match files_check(args, name) {
            Some(check) => slot.with_check(check),
            None => slot,
        };
        fw.add_slot(Arc::new(slot));
    }
    Ok(())
}

/// What readiness checks for an unloaded ML guard of the ONNX backend: the runtime library and the
/// model files the next load needs, present with their pinned sizes (a few `stat` calls, nothing
/// loaded). The errors name the same fixes a failed load does.
#[cfg(feature = "onnx")]
fn files_check(args: &GuardArgs, guard: &'static str) -> Option<featherguard::GuardCheck> {
    use crate::embed_cmd::Backend;
    use featherguard::GuardError;
    if args.backend != Backend::Onnx {
        return None;
    }
    Some(Box::new(move || {
        let library = featherguard::onnx::runtime::locate(None);
        library.map_err(|e| e.into_guard_error(guard))?;
        featherguard_setup::Layout::discover()
            .and_then(|l| l.find_minilm())
            .map(drop)
            .map_err(|e| GuardError::Unavailable {
                guard: guard.into(),
                what: "all-MiniLM-L6-v2".into(),
                reason: e.to_string(),
                fix: "run `featherguard setup --only models`".into(),
            })
    }))
}

#[cfg(all(feature = "torch", not(feature = "onnx")))]
fn files_check(_args: &GuardArgs, _guard: &'static str) -> Option<featherguard::GuardCheck> {
    None
}
