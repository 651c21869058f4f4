//! `featherguard bank build`, `featherguard train` and `featherguard crossval`: building the
//! similarity bank and the classifier head from labeled JSONL, and measuring them out of fold.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use featherguard::semantic::{
    build_bank, family_of, out_of_fold, read_corpus, train_head, EmbeddedSet, Example,
    TrainOptions, BENIGN,
};
use featherguard::{Action, Config};
use featherguard_loader::sha256_file;
use serde_json::json;

use crate::embed_cmd::{Bar, EmbedOpts};

#[derive(Subcommand, Debug)]
pub enum BankCommand {
    /// Embed a labeled JSONL corpus into an exemplar bank for the similarity guard.
    #[command(after_help = "\
Corpus lines: {\"text\": \"...\", \"label\": \"attack\"|\"benign\", \"category\": \"family:detail\"}. The family
(before ':') names the finding; it must be a featherguard family or `harmful_request`.

Example:
  featherguard bank build --corpus labeled.jsonl --out my-bank.safetensors
  featherguard scan --guards pattern,similarity --bank my-bank.safetensors \"...\"")]
    Build(BankBuildArgs),
}

#[derive(Args, Debug)]
pub struct BankBuildArgs {
    #[arg(long, value_name = "FILE.jsonl")]
    corpus: PathBuf,
    #[arg(long, value_name = "BANK.safetensors")]
    out: PathBuf,
    /// Neighbours per class.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Benign false-positive rate at the flag / block cut points (leave-one-out on the bank's benign items).
    #[arg(long, default_value_t = 0.05)]
    flag_fpr: f32,
    #[arg(long, default_value_t = BANK_BLOCK_FPR)]
    block_fpr: f32,
    #[command(flatten)]
    embed: EmbedOpts,
}

/// Default block-level benign FPR of banks. The bank's benign exemplars are harder than everyday
/// prompts (attack-like words, agent tasks), so 2% there measured 0.5-1% on unseen benign text.
const BANK_BLOCK_FPR: f32 = 0.02;

#[derive(Args, Debug)]
#[command(after_help = "\
Trains a multinomial logistic-regression head on the embeddings, holding out --validation of each
class; the block threshold is calibrated to --block-fpr on the held-out benign texts.

Example:
  featherguard train --corpus labeled.jsonl --out my-head.safetensors")]
pub struct TrainArgs {
    #[arg(long, value_name = "FILE.jsonl")]
    corpus: PathBuf,
    #[arg(long, value_name = "HEAD.safetensors")]
    out: PathBuf,
    #[arg(long, default_value_t = 0.2)]
    validation: f32,
    #[arg(long, default_value_t = 300)]
    epochs: usize,
    #[arg(long, default_value_t = 0.05)]
    flag_fpr: f32,
    #[arg(long, default_value_t = 0.01)]
    block_fpr: f32,
    #[command(flatten)]
    embed: EmbedOpts,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Scores every corpus item with a bank and a head built without it (k-fold), combines them with the
pattern guard under the configured policy, and prints recall per family and benign false positives.
Items whose `source` matches no --trainable prefix are scored but never trained on.

Example (scripts/onnx/crossval.sh):
  featherguard crossval --corpus dev.jsonl --folds 5 --trainable garak== --trainable agentdojo== \\
      --extra-benign semantic/data/benign_prompts.txt")]
pub struct CrossvalArgs {
    #[arg(long, value_name = "FILE.jsonl")]
    corpus: PathBuf,
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// `source` prefixes of items that may be trained on (repeatable; none = all items).
    #[arg(long, value_name = "PREFIX")]
    trainable: Vec<String>,
    /// Text files of benign lines (`#` comments) always trained on and never scored.
    #[arg(long, value_name = "FILE")]
    extra_benign: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Block-level benign FPR the fold banks are calibrated to.
    #[arg(long, default_value_t = BANK_BLOCK_FPR)]
    bank_block_fpr: f32,
    /// Write per-item scores as JSONL here.
    #[arg(long, value_name = "FILE")]
    scores: Option<PathBuf>,
    #[command(flatten)]
    embed: EmbedOpts,
}

fn source_of(path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match sha256_file(path) {
        Ok(d) => format!("{name} (sha256 {d})"),
        Err(_) => name,
    }
}

fn embed_examples(examples: &[Example], o: &EmbedOpts) -> anyhow::Result<EmbeddedSet> {
    let e = o.embedder()?;
    let mut bar = Bar::new("embedding");
    let mut progress = |d: usize, t: usize| bar.update(d, t);
    Ok(EmbeddedSet::embed(
        e.as_ref(),
        examples,
        o.batch,
        &mut progress,
    )?)
}

pub fn run_bank(cmd: &BankCommand) -> anyhow::Result<ExitCode> {
    let BankCommand::Build(a) = cmd;
    let examples = read_corpus(&a.corpus)?;
    let set = embed_examples(&examples, &a.embed)?;
    let bank = build_bank(&set, a.k, source_of(&a.corpus), a.flag_fpr, a.block_fpr)?;
    bank.save(&a.out)
        .with_context(|| format!("{}: cannot write the bank", a.out.display()))?;
    let m = bank.meta();
    println!(
        "{}: {} exemplars {:?}, model {}, k {}, cut points flag {:.4} block {:.4} (on {} benign)",
        a.out.display(),
        bank.len(),
        m.counts,
        m.model,
        m.k,
        m.calibration.flag_raw,
        m.calibration.block_raw,
        m.calibration.benign
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_train(a: &TrainArgs) -> anyhow::Result<ExitCode> {
    let examples = read_corpus(&a.corpus)?;
    let set = embed_examples(&examples, &a.embed)?;
    let options = TrainOptions {
        validation: a.validation,
        epochs: a.epochs,
        flag_fpr: a.flag_fpr,
        block_fpr: a.block_fpr,
        ..Default::default()
    };
    let (head, r) = train_head(&set, options, source_of(&a.corpus))?;
    head.save(&a.out)
        .with_context(|| format!("{}: cannot write the head", a.out.display()))?;
    println!(
        "{}: classes {:?}; train {} / validation {} ({} benign); loss {:.4}; validation recall at block {:.1}%, at flag {:.1}%, benign FPR at block {:.2}%",
        a.out.display(),
        head.meta().classes,
        r.train,
        r.validation,
        r.validation_benign,
        r.train_loss,
        r.recall_block * 100.0,
        r.recall_flag * 100.0,
        r.fpr_block * 100.0
    );
    Ok(ExitCode::SUCCESS)
}

/// Items of one crossval row, and how many of them each guard combination blocks.
#[derive(Default, Clone, Copy)]
struct Row {
    n: usize,
    pattern: usize,
    similarity: usize,
    classifier: usize,
    all: usize,
}

impl Row {
    /// One item, by which guards block it alone.
    fn item(pattern: bool, sim: bool, cls: bool) -> Row {
        Row {
            n: 1,
            pattern: usize::from(pattern),
            similarity: usize::from(pattern || sim),
            classifier: usize::from(pattern || cls),
            all: usize::from(pattern || sim || cls),
        }
    }

    fn print(&self, label: &str) {
        let pct = |a: usize| 100.0 * a as f64 / self.n.max(1) as f64;
        println!(
            "{label:<34} {:>6} {:>8.1}% {:>11.1}% {:>11.1}% {:>8.1}%",
            self.n,
            pct(self.pattern),
            pct(self.similarity),
            pct(self.classifier),
            pct(self.all)
        );
    }
}

impl std::ops::AddAssign for Row {
    fn add_assign(&mut self, r: Row) {
        self.n += r.n;
        self.pattern += r.pattern;
        self.similarity += r.similarity;
        self.classifier += r.classifier;
        self.all += r.all;
    }
}

pub fn run_crossval(a: &CrossvalArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    let corpus = read_corpus(&a.corpus)?;
    let trainable_item = |e: &Example| {
        a.trainable.is_empty() || a.trainable.iter().any(|p| e.source.starts_with(p.as_str()))
    };
    let mut examples = corpus.clone();
    let mut trainable: Vec<bool> = corpus.iter().map(trainable_item).collect();
    for f in &a.extra_benign {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            examples.push(Example {
                text: line.into(),
                class: BENIGN.into(),
                category: "benign:extra".into(),
                source: f.display().to_string(),
            });
            trainable.push(true);
        }
    }
    let set = embed_examples(&examples, &a.embed)?;
    let mut bar = Bar::new("folds");
    let mut progress = |d: usize, t: usize| bar.update(d, t);
    let oof = out_of_fold(
        &set,
        &trainable,
        a.folds,
        a.k,
        (0.05, a.bank_block_fpr),
        TrainOptions::default(),
        &mut progress,
    )?;
    let fw = crate::build_firewall(cfg)?;
    let policy = fw.policy().clone();
    let blocks = |score: f32, class: usize| {
        family_of(&set.classes[class]).is_some_and(|f| score >= policy.thresholds(f).block_at)
    };
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut scores_out = match &a.scores {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        )),
        None => None,
    };
    for (i, e) in corpus.iter().enumerate() {
        let pattern = fw.scan(&e.text).action == Action::Block;
        let sim = blocks(oof.similarity[i], oof.similarity_class[i]);
        let cls = blocks(oof.classifier[i], oof.classifier_class[i]);
        let key = if e.class == BENIGN {
            format!(
                "benign ({})",
                if trainable[i] {
                    "trainable"
                } else {
                    "never trained on"
                }
            )
        } else {
            e.class.clone()
        };
        *rows.entry(key).or_default() += Row::item(pattern, sim, cls);
        if let Some(w) = scores_out.as_mut() {
            let v = json!({"i": i, "class": e.class, "category": e.category, "pattern_block": pattern,
                "similarity": oof.similarity[i], "classifier": oof.classifier[i], "fold": oof.fold[i]});
            writeln!(w, "{v}")?;
        }
    }
    println!(
        "{:<34} {:>6} {:>9} {:>12} {:>12} {:>9}",
        "family (blocked %)", "items", "pattern", "+similarity", "+classifier", "all"
    );
    let mut attack = Row::default();
    for (k, r) in &rows {
        r.print(k);
        if !k.starts_with("benign") {
            attack += *r;
        }
    }
    attack.print("ALL ATTACKS");
    Ok(ExitCode::SUCCESS)
}
