//! `featherguard rules list|check|explain`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use featherguard::{default_rules, load_rule_file, Config, PatternGuard, Rule, RuleSet};

use crate::scan::Format;

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// List the active rules (default pack plus --rules/--config files).
    List {
        #[arg(long, short, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Validate a rule file (errors carry line and column) and run every rule's examples.
    /// Without FILE, checks the embedded default pack.
    #[command(
        after_help = "Exit status: 0 when every rule parses and every example behaves, 1 when an \
                            example fails, 2 when the file is invalid."
    )]
    Check {
        /// Rule file (TOML, see docs/rules.md).
        file: Option<PathBuf>,
    },
    /// Show a rule: description, patterns as compiled, examples; with --text, what it matches there.
    Explain {
        /// Rule id, e.g. `injection.override.ignore-previous`.
        id: String,
        /// Scan this text and show this rule's matches.
        #[arg(long)]
        text: Option<String>,
    },
}

pub fn run(cmd: &RulesCommand, cfg: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::List { format } => list(cfg, *format),
        RulesCommand::Check { file } => check(file.as_ref()),
        RulesCommand::Explain { id, text } => explain(cfg, id, text.as_deref()),
    }
}

fn list(cfg: &Config, format: Format) -> anyhow::Result<ExitCode> {
    let guard = featherguard::pattern_guard(cfg)?;
    let rules = guard.rules().rules();
    let mut out = io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, rules)?;
            writeln!(out)?;
        }
        Format::Text => {
            for r in rules {
                writeln!(
                    out,
                    "{:<48} {:<18} {:<8} {:<3} {}",
                    r.id,
                    r.family.as_str(),
                    r.severity.as_str(),
                    r.lang.as_deref().unwrap_or("-"),
                    r.description
                )?;
            }
            writeln!(out, "{} rules", rules.len())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Failures of rules' examples: (rule id, message).
pub fn example_failures(rules: &[Rule]) -> anyhow::Result<Vec<(String, String)>> {
    let guard = PatternGuard::new(RuleSet::new(rules.to_vec())?, Default::default());
    let mut failures = Vec::new();
    for rule in rules {
        for text in &rule.examples.matches {
            if !guard.find(text).iter().any(|f| *f.rule == *rule.id) {
                failures.push((
                    rule.id.clone(),
                    format!("should match but does not: {text:?}"),
                ));
            }
        }
        for text in &rule.examples.no_match {
            if guard.find(text).iter().any(|f| *f.rule == *rule.id) {
                failures.push((
                    rule.id.clone(),
                    format!("should not match but does: {text:?}"),
                ));
            }
        }
    }
    Ok(failures)
}

fn check(file: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let (name, rules) = match file {
        Some(path) => match load_rule_file(path) {
            Ok(r) => (path.display().to_string(), r),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => ("<default pack>".to_string(), default_rules()),
    };
    if let Err(e) = RuleSet::new(rules.clone()) {
        eprintln!("{name}: {e}");
        return Ok(ExitCode::from(2));
    }
    let examples: usize = rules
        .iter()
        .map(|r| r.examples.matches.len() + r.examples.no_match.len())
        .sum();
    let failures = example_failures(&rules)?;
    let mut out = io::stdout().lock();
    for (id, msg) in &failures {
        let origin = rules
            .iter()
            .find(|r| &r.id == id)
            .map(|r| r.origin.to_string())
            .unwrap_or_default();
        writeln!(out, "{origin}: rule `{id}`: {msg}")?;
    }
    if file.is_some() {
        let defaults = default_rules();
        for r in &rules {
            if defaults.iter().any(|d| d.id == r.id) {
                writeln!(
                    out,
                    "{}: note: rule `{}` replaces the default rule with the same id",
                    r.origin, r.id
                )?;
            }
        }
    }
    writeln!(
        out,
        "{name}: {} rules, {} examples, {} failing",
        rules.len(),
        examples,
        failures.len()
    )?;
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn explain(cfg: &Config, id: &str, text: Option<&str>) -> anyhow::Result<ExitCode> {
    let guard = featherguard::pattern_guard(cfg)?;
    let Some(rule) = guard.rules().rule(id) else {
        anyhow::bail!("no rule with id `{id}` (see `featherguard rules list`)");
    };
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}  ({}, {}, defined at {})",
        rule.id, rule.family, rule.severity, rule.origin
    )?;
    if !rule.description.is_empty() {
        writeln!(out, "  {}", rule.description)?;
    }
    writeln!(
        out,
        "  view: {:?}{}",
        rule.view,
        rule.lang
            .as_deref()
            .map(|l| format!(", lang: {l}"))
            .unwrap_or_default()
    )?;
    if let Some(v) = rule.validate {
        writeln!(out, "  validate: {v:?}")?;
    }
    writeln!(out, "  compiled patterns:")?;
    for p in guard.rules().compiled_patterns(id) {
        writeln!(out, "    {p}")?;
    }
    for m in &rule.examples.matches {
        writeln!(out, "  matches:     {m:?}")?;
    }
    for m in &rule.examples.no_match {
        writeln!(out, "  no match:    {m:?}")?;
    }
    if let Some(text) = text {
        let hits: Vec<_> = guard
            .find(text)
            .into_iter()
            .filter(|f| &*f.rule == id)
            .collect();
        if hits.is_empty() {
            writeln!(out, "  no match in the given text")?;
        }
        for f in hits {
            writeln!(
                out,
                "  match {}..{} {:?} via {}",
                f.span.start,
                f.span.end,
                text.get(f.span.start..f.span.end).unwrap_or(""),
                f.view.as_deref().unwrap_or("?")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
