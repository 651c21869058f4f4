//! ML guards under governance, through the binary with the real runtime and model (onnx feature;
//! needs `cargo xtask setup --only onnx,models`): lazy load, idle unload measured from outside the
//! process, reload, the `[heavy] max_windows` bound, fail-open and fail-closed without a model.
#![cfg(all(feature = "onnx", feature = "server"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_featherguard"))
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("govern", name)
}

fn config(name: &str, toml: &str) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, toml).unwrap();
    p
}

/// `featherguard --config CONFIG scan --format json --guards GUARDS TEXT` with `env` set: the exit
/// code, one JSON verdict per line, and stderr.
fn scan(
    config: &Path,
    guards: &str,
    text: &str,
    env: &[(&str, &str)],
) -> (i32, Vec<Value>, String) {
    let mut cmd = bin();
    cmd.arg("--config").arg(config);
    cmd.args(["scan", "--format", "json", "--guards", guards, text]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let verdicts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    (out.status.code().unwrap_or(-1), verdicts, stderr)
}

fn long_benign_text() -> String {
    // ~40 windows of 128 tokens: far over a max_windows of 2.
    "The quarterly report covers revenue, hiring, office moves and the product roadmap for next year. "
        .repeat(200)
}

fn rules(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| f["rule"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn window_overflow_is_sampled_and_flagged_never_silent() {
    let cfg = config(
        "windows.toml",
        "[heavy]\nmax_windows = 2\ncascade = \"always\"\n",
    );
    let text = long_benign_text();
    let (code, v, err) = scan(&cfg, "pattern,similarity", &text, &[]);
    assert!(code == 0 || code == 1, "{err}");
    assert!(v[0].get("errors").is_none(), "{}", v[0]);
    let f = v[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "similarity.windows_sampled")
        .unwrap_or_else(|| panic!("no windows_sampled finding: {}", v[0]));
    assert_eq!(f["family"], "limits", "{f}");
    // A short text stays within the bound: no limits finding.
    let (_, v, _) = scan(&cfg, "pattern,similarity", "How do I bake bread?", &[]);
    assert!(
        !rules(&v[0]).iter().any(|r| r.ends_with("windows_sampled")),
        "{}",
        v[0]
    );
}

#[test]
fn window_overflow_reject_follows_the_fail_mode() {
    let text = long_benign_text();
    for (fail_mode, action) in [("closed", "block"), ("open", "flag")] {
        let cfg = config(
            &format!("reject-{fail_mode}.toml"),
            &format!(
                "[policy]\nfail_mode = \"{fail_mode}\"\n[heavy]\nmax_windows = 2\nwindow_overflow = \"reject\"\ncascade = \"always\"\n"
            ),
        );
        let (_, v, err) = scan(&cfg, "pattern,similarity", &text, &[]);
        assert_eq!(v[0]["action"], action, "{fail_mode}: {} {err}", v[0]);
        assert!(
            v[0]["errors"].to_string().contains("at most 2 allowed"),
            "{}",
            v[0]
        );
    }
}

#[test]
fn missing_model_fails_open_or_closed_as_configured() {
    let empty_home = tmp("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let home = empty_home.to_str().unwrap();
    for (fail_mode, action, code) in [("closed", "block", 1), ("open", "flag", 0)] {
        let cfg = config(
            &format!("missing-{fail_mode}.toml"),
            &format!("[policy]\nfail_mode = \"{fail_mode}\"\n[heavy]\ncascade = \"always\"\n"),
        );
        let (c, v, err) = scan(
            &cfg,
            "pattern,similarity,classifier",
            "What is the capital of France?",
            &[("FEATHERGUARD_HOME", home)],
        );
        assert_eq!(c, code, "{fail_mode}: {err}");
        assert_eq!(v[0]["action"], action, "{fail_mode}: {}", v[0]);
        let errors = v[0]["errors"].to_string();
        // Both slots fail to load, each naming the fix; the pattern verdict is still there.
        assert!(
            errors.contains("similarity") && errors.contains("classifier"),
            "{errors}"
        );
        assert!(
            errors.contains("featherguard setup --only models"),
            "{errors}"
        );
    }
}

/// `diag memory`: the model loads only when its slot does, unload returns the session's anonymous
/// memory, and the next scan reloads it.
#[test]
fn diag_memory_reports_lazy_load_unload_and_reload() {
    let out = bin()
        .args([
            "diag",
            "memory",
            "--guards",
            "pattern,similarity",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stage = |name: &str| {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("no stage {name}: {v}"))
            .clone()
    };
    let kib = |s: &Value, f: &str| s[f].as_u64().unwrap() as i64;
    let (rules, runtime, loaded, unloaded, reloaded) = (
        stage("rules_compiled"),
        stage("runtime_loaded"),
        stage("model_loaded"),
        stage("after_unload"),
        stage("after_reload"),
    );
    assert!(
        kib(&loaded, "anon_kib") - kib(&runtime, "anon_kib") > 30 << 10,
        "the session is loaded by the slot, not before: {v}"
    );
    assert!(kib(&rules, "rss_kib") < kib(&loaded, "rss_kib"), "{v}");
    assert!(
        kib(&loaded, "anon_kib") - kib(&unloaded, "anon_kib") > 30 << 10,
        "unload returns the session's memory: {v}"
    );
    assert!(
        kib(&reloaded, "anon_kib") - kib(&unloaded, "anon_kib") > 30 << 10,
        "{v}"
    );
    // Without --prompts the residue is counted from the last stage before the runtime loaded.
    let residue = &v["unload_residue"];
    assert_eq!(residue["against"], "rules_compiled", "{v}");
    assert_eq!(
        residue["rss_kib"].as_i64(),
        Some(kib(&unloaded, "rss_kib") - kib(&rules, "rss_kib")),
        "{v}"
    );
    let slot = &v["slots"][0];
    assert_eq!(slot["name"], "similarity");
    assert_eq!(
        (slot["loads"].as_u64(), slot["unloads"].as_u64()),
        (Some(2), Some(1)),
        "{slot}"
    );
}

/// `featherguard --config CONFIG serve ...` (see [`common::Server`]).
fn start_server(config: &Path, serve_args: &[&str]) -> Server {
    let mut cmd = bin();
    cmd.arg("--config").arg(config);
    Server::start(cmd, serve_args, tmp("serve.log"))
}

fn slot(stats: &Value) -> Value {
    stats["slots"][0].clone()
}

/// `serve` with an idle unload of 1 s: the model loads on the first request, shows in
/// `/v1/guards`, `/readyz` and `/metrics`, unloads when idle with the server's RSS dropping (read
/// from `/proc/PID/status` by the test, not reported by the server), and the next request reloads.
#[test]
fn serve_loads_lazily_unloads_when_idle_and_reloads() {
    let cfg = config(
        "idle.toml",
        "[heavy]\nidle_unload_secs = 1\ncascade = \"always\"\n",
    );
    let s = start_server(&cfg, &["--guards", "pattern,similarity"]);
    let before = s.json("/v1/guards").1;
    assert_eq!(slot(&before)["state"], "unloaded", "{before}");
    assert_eq!(slot(&before)["loads"], 0);
    // A pattern-only scan (warm rules, buffers) so the pre-load figure is a serving process.
    let (status, _) = s
        .request(
            "POST",
            "/v1/scan",
            r#"{"text": "hello", "guards": ["patterns"]}"#,
        )
        .unwrap();
    assert_eq!(status, 200);
    let (rss0, anon0) = s.rss_kib();

    let (status, body) = s
        .request(
            "POST",
            "/v1/scan",
            r#"{"text": "What is the capital of France?"}"#,
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let loaded = s.json("/v1/guards").1;
    let sl = slot(&loaded);
    assert_eq!(sl["state"], "loaded", "{loaded}");
    assert_eq!(sl["loads"], 1);
    assert!(sl["load_ms"].as_f64().unwrap() > 0.0, "{sl}");
    assert!(sl["rss_delta_bytes"].as_i64().unwrap() > 20 << 20, "{sl}");
    let (rss1, anon1) = s.rss_kib();
    assert!(anon1 > anon0 + (30 << 10), "{anon0} -> {anon1} KiB");
    let ready = s.json("/readyz").1;
    assert!(
        ready["guards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "similarity" && g["usable"] == true),
        "{ready}"
    );
    let (_, metrics) = s.get("/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("featherguard_guard_loaded") && l.contains("similarity")),
        "{metrics}"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    while slot(&s.json("/v1/guards").1)["state"] != "unloaded" {
        assert!(Instant::now() < deadline, "not unloaded when idle");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rss2, anon2) = s.rss_kib();
    let unloaded = slot(&s.json("/v1/guards").1);
    assert_eq!(unloaded["unloads"], 1, "{unloaded}");
    // The session's anonymous memory comes back; the runtime library stays mapped (ort keeps it
    // for the process), so the total is compared with the loaded figure, anon with pre-load.
    assert!(
        anon2 < anon0 + (10 << 10),
        "anon before load {anon0} KiB, after idle unload {anon2} KiB"
    );
    assert!(
        rss2 + (30 << 10) < rss1,
        "RSS {rss0} -> {rss1} -> {rss2} KiB"
    );

    let (status, _) = s
        .request("POST", "/v1/scan", r#"{"text": "Recommend a good novel."}"#)
        .unwrap();
    assert_eq!(status, 200);
    let again = slot(&s.json("/v1/guards").1);
    assert_eq!(
        (again["state"].as_str(), again["loads"].as_u64()),
        (Some("loaded"), Some(2)),
        "{again}"
    );
}
