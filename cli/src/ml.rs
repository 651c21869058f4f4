//! `--guards`: which guards a scan or eval runs, and building the firewall with them. The ML
//! guards (similarity, classifier, topic) need the `onnx` or `torch` feature.

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
        add_ml_guards(&mut fw, args)?;
    }
    Ok(fw)
}

#[cfg(not(any(feature = "onnx", feature = "torch")))]
fn add_ml_guards(_fw: &mut Firewall, args: &GuardArgs) -> anyhow::Result<()> {
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

#[cfg(any(feature = "onnx", feature = "torch"))]
fn add_ml_guards(fw: &mut Firewall, args: &GuardArgs) -> anyhow::Result<()> {
    use std::sync::Arc;

    use anyhow::Context;
    use featherguard::semantic::{
        Bank, Head, HeadGuard, LastBatchMemo, SimilarityGuard, TopicConfig, TopicGuard,
    };

    // One embedding pass per input, shared by every ML guard.
    let embedder: Arc<dyn featherguard::Embedder> = Arc::new(LastBatchMemo::new(
        crate::embed_cmd::embedder(args.backend, args.ml_threads, args.device)?,
    ));
    for g in &args.guards {
        match g {
            GuardKind::Pattern => {}
            GuardKind::Similarity => {
                let path = crate::defaults::bank(args.bank.as_deref())?;
                let bank = Bank::open(&path)?;
                fw.push_guard(Arc::new(SimilarityGuard::new(
                    embedder.clone(),
                    Arc::new(bank),
                )));
            }
            GuardKind::Classifier => {
                let path = crate::defaults::head(args.head.as_deref())?;
                let head = Head::open(&path)?;
                fw.push_guard(Arc::new(HeadGuard::new(embedder.clone(), Arc::new(head))));
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
                fw.push_guard(Arc::new(TopicGuard::new(embedder.clone(), config)));
            }
        }
    }
    Ok(())
}
