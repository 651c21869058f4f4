//! `cargo xtask audit`: per feature set, the stripped binary size, crate count, shared libraries,
//! and peak RSS / wall time of a few command lines measured from outside the process.

mod budgets;
mod build;
mod measure;
mod prompts;
mod report;
mod sets;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use featherguard_setup::{Layout, Setup};

use crate::args::Args;
use build::{SharedLib, Workspace};
use measure::{Run, Summary};
use sets::{FeatureSet, Scenario, SETS};

/// Parsed `cargo xtask audit` flags.
struct Options {
    only: Vec<String>,
    runs: usize,
    check: bool,
    docs: bool,
    budgets: Option<PathBuf>,
}

/// The measurements of one command line.
pub struct ScenarioResult {
    scenario: Scenario,
    runs: Vec<Run>,
    wall_ms: Summary,
    peak_rss_kib: Summary,
}

/// One stage of `featherguard diag memory`: the process's own `/proc/self/status` figures after
/// that stage, median over the runs (KiB).
pub struct StageResult {
    name: String,
    note: Option<String>,
    rss_kib: f64,
    hwm_kib: f64,
    anon_kib: f64,
    file_kib: f64,
}

/// Everything measured for an audited set.
pub struct Measured {
    binary: PathBuf,
    binary_bytes: u64,
    crates: usize,
    crates_linked: usize,
    libs: Vec<SharedLib>,
    scenarios: Vec<ScenarioResult>,
    /// The step-by-step memory profile (empty if the binary has no `diag memory`).
    stages: Vec<StageResult>,
    /// The `diag memory` command line the stages come from.
    diag_args: Vec<String>,
}

/// One row group of the report.
pub struct SetReport {
    set: &'static FeatureSet,
    outcome: std::result::Result<Measured, String>,
}

impl Measured {
    /// Metric name -> value, the names budgets refer to (MB = 10^6 bytes).
    fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("binary_mb".to_string(), self.binary_bytes as f64 / 1e6);
        m.insert("crates".to_string(), self.crates as f64);
        m.insert("crates_linked".to_string(), self.crates_linked as f64);
        m.insert(
            "shared_libs_mb".to_string(),
            self.libs.iter().map(|l| l.bytes).sum::<u64>() as f64 / 1e6,
        );
        for s in &self.scenarios {
            m.insert(
                format!("{}_peak_rss_mb", s.scenario.name),
                s.peak_rss_kib.median * 1024.0 / 1e6,
            );
            m.insert(format!("{}_wall_ms", s.scenario.name), s.wall_ms.median);
        }
        for s in &self.stages {
            m.insert(format!("stage_{}_rss_mb", s.name), s.rss_kib * 1024.0 / 1e6);
        }
        m
    }
}

pub fn run(mut args: Args) -> Result<ExitCode> {
    let opts = Options {
        only: args.list("--only")?,
        runs: args
            .value("--runs")?
            .map(|v| v.parse::<usize>())
            .transpose()
            .context("--runs takes a number")?
            .unwrap_or(5),
        check: args.flag("--check"),
        docs: args.flag("--docs"),
        budgets: args.value("--budgets")?.map(PathBuf::from),
    };
    args.finish()?;
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for name in &opts.only {
        if !SETS.iter().any(|s| s.name == name) {
            bail!(
                "unknown feature set `{name}`; known: {}",
                SETS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
    }

    let ws = Workspace::locate();
    let budgets_file = opts
        .budgets
        .clone()
        .unwrap_or_else(|| ws.root.join("xtask/budgets.toml"));
    // Read budgets first: a broken file should fail before minutes of building.
    let budgets = if opts.check {
        let text = fs::read_to_string(&budgets_file)
            .with_context(|| format!("read {}", budgets_file.display()))?;
        Some(budgets::parse(&text, &budgets_file)?)
    } else {
        None
    };

    let features = ws.facade_features()?;
    let layout = Layout::discover().ok();
    let audit_dir = ws.target.join("audit");
    fs::create_dir_all(&audit_dir).with_context(|| format!("create {}", audit_dir.display()))?;
    let prompts_file = audit_dir.join("prompts-1000.txt");
    fs::write(&prompts_file, prompts::generate(1000))
        .with_context(|| format!("write {}", prompts_file.display()))?;
    let varied_file = audit_dir.join("varied-1000.txt");
    fs::write(
        &varied_file,
        prompts::varied(&ws.root.join("semantic/data/default-corpus.jsonl"), 1000)?,
    )
    .with_context(|| format!("write {}", varied_file.display()))?;

    let mut reports = Vec::new();
    for set in SETS
        .iter()
        .filter(|s| opts.only.is_empty() || opts.only.iter().any(|o| o == s.name))
    {
        let outcome = match skip_reason(set, &features, layout.as_ref()) {
            Some(reason) => {
                eprintln!("audit: skipping {}: {reason}", set.name);
                Err(reason)
            }
            None => Ok(audit_set(
                &ws,
                set,
                layout.as_ref(),
                (&prompts_file, &varied_file),
                opts.runs,
                &audit_dir,
            )?),
        };
        reports.push(SetReport { set, outcome });
    }

    let json_path = ws.target.join("audit.json");
    let json = report::json(&reports, opts.runs);
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    let table = report::markdown(&reports, opts.runs);
    println!("{table}");
    println!("wrote {}", json_path.display());
    if opts.docs {
        let doc = ws.root.join("docs/audit.md");
        report::update_doc(&doc, &table)?;
        println!("updated {}", doc.display());
    }

    let Some(budgets) = budgets else {
        return Ok(ExitCode::SUCCESS);
    };
    let measured: BTreeMap<String, BTreeMap<String, f64>> = reports
        .iter()
        .filter_map(|r| {
            r.outcome
                .as_ref()
                .ok()
                .map(|m| (r.set.name.to_string(), m.metrics()))
        })
        .collect();
    let verdicts = budgets::check(&budgets, &measured, &budgets_file)?;
    let mut exceeded = Vec::new();
    for (b, v) in &verdicts {
        let line = match v {
            budgets::Verdict::Within(x) => {
                format!("ok       {}.{} = {x:.2} <= {}", b.set, b.metric, b.limit)
            }
            budgets::Verdict::Exceeded(x) => {
                exceeded.push(format!("{}.{} = {x:.2} > {}", b.set, b.metric, b.limit));
                format!("EXCEEDED {}.{} = {x:.2} > {}", b.set, b.metric, b.limit)
            }
            budgets::Verdict::NotMeasured => format!(
                "--       {}.{} (set not audited in this run)",
                b.set, b.metric
            ),
        };
        println!("{line}");
    }
    if !exceeded.is_empty() {
        bail!(
            "budgets exceeded ({}): {}",
            budgets_file.display(),
            exceeded.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a set cannot be audited now, if so.
fn skip_reason(
    set: &FeatureSet,
    features: &serde_json::Map<String, serde_json::Value>,
    layout: Option<&Layout>,
) -> Option<String> {
    if let Some(f) = set
        .features
        .iter()
        .find(|f| !sets::has_backend_code(features, f))
    {
        return Some(format!(
            "feature `{f}` enables no backend code yet (its issue adds it and its rows)"
        ));
    }
    if set.needs.is_empty() {
        return None;
    }
    let only = set
        .needs
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(",");
    let Some(layout) = layout else {
        return Some(format!(
            "no setup home; run `cargo xtask setup --only {only}`"
        ));
    };
    let ready = Setup::new(layout.clone())
        .check(set.needs)
        .is_ok_and(|s| s.iter().all(|i| i.is_valid()));
    (!ready).then(|| format!("runtimes/models missing; run `cargo xtask setup --only {only}`"))
}

fn audit_set(
    ws: &Workspace,
    set: &'static FeatureSet,
    layout: Option<&Layout>,
    (prompts_file, varied_file): (&Path, &Path),
    runs: usize,
    audit_dir: &Path,
) -> Result<Measured> {
    eprintln!("audit: building {} (profile dist)", set.name);
    let binary = ws.build(set, &set.build_env(layout))?;
    let binary_bytes = fs::metadata(&binary)?.len();
    let (crates, crates_linked) = ws.crate_counts(set)?;
    let env = set.run_env(layout);
    let libs = build::shared_libs(&binary, &set.dlopen_paths(layout), &env)?;
    let mut scenarios = Vec::new();
    for scenario in set.scenarios(prompts_file, varied_file) {
        eprintln!(
            "audit: {} {} ({runs} runs + 1 warm-up)",
            set.name, scenario.name
        );
        let log = audit_dir.join(format!("{}-{}.stderr", set.name, scenario.name));
        let mut results = Vec::with_capacity(runs);
        for i in 0..=runs {
            let mut cmd = Command::new(&binary);
            cmd.args(&scenario.args)
                .envs(env.iter().map(|(k, v)| (k, v)));
            let r = measure::run_once(cmd, &log)?;
            if !r.code.is_some_and(|c| scenario.ok_codes.contains(&c)) {
                let err = fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "{} {:?} exited with {:?}; stderr ({}):\n{}",
                    binary.display(),
                    scenario.args,
                    r.code,
                    log.display(),
                    err.lines()
                        .rev()
                        .take(10)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            // The first run warms the page cache and is not counted.
            if i > 0 {
                results.push(r);
            }
        }
        let wall: Vec<f64> = results.iter().map(|r| r.wall_ms).collect();
        let rss: Vec<f64> = results.iter().map(|r| r.peak_rss_kib as f64).collect();
        let (Some(wall_ms), Some(peak_rss_kib)) =
            (measure::summarize(&wall), measure::summarize(&rss))
        else {
            bail!("no runs measured");
        };
        scenarios.push(ScenarioResult {
            scenario,
            runs: results,
            wall_ms,
            peak_rss_kib,
        });
    }
    let diag_args = set.diag_args(prompts_file, varied_file);
    eprintln!("audit: {} memory stages ({runs} runs)", set.name);
    let stages = memory_stages(&binary, &diag_args, &env, runs)?;
    Ok(Measured {
        binary,
        binary_bytes,
        crates,
        crates_linked,
        libs,
        scenarios,
        stages,
        diag_args,
    })
}

/// Runs `featherguard diag memory` `runs` times and takes each stage's median figures.
fn memory_stages(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    runs: usize,
) -> Result<Vec<StageResult>> {
    let mut per_run: Vec<Vec<serde_json::Value>> = Vec::new();
    for _ in 0..runs {
        let out = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("run {} {args:?}", binary.display()))?;
        if !out.status.success() {
            bail!(
                "{} {args:?} failed ({}):\n{}",
                binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{} {args:?}: output is not JSON", binary.display()))?;
        per_run.push(v["stages"].as_array().cloned().unwrap_or_default());
    }
    let Some(first) = per_run.first() else {
        return Ok(Vec::new());
    };
    let median = |i: usize, field: &str| {
        let v: Vec<f64> = per_run
            .iter()
            .filter_map(|r| r.get(i).and_then(|s| s[field].as_f64()))
            .collect();
        measure::summarize(&v).map_or(0.0, |s| s.median)
    };
    Ok(first
        .iter()
        .enumerate()
        .map(|(i, s)| StageResult {
            name: s["stage"].as_str().unwrap_or("?").to_string(),
            note: s["note"].as_str().map(str::to_string),
            rss_kib: median(i, "rss_kib"),
            hwm_kib: median(i, "hwm_kib"),
            anon_kib: median(i, "anon_kib"),
            file_kib: median(i, "file_kib"),
        })
        .collect())
}
