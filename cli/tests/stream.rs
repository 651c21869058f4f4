//! `featherguard scan --stream`: stdin in, released (redacted) text out, findings on stderr or as
//! NDJSON events.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_featherguard");

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // Written in small pieces, as a model would produce it.
    for piece in stdin.chunks(3) {
        input.write_all(piece).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn long_text() -> String {
    let filler = "The model answers the question about quarterly revenue.\n".repeat(60);
    format!("{filler}Use aws_access_key_id = AKIAQWERTYUIOPASDFGH here.\n{filler}")
}

#[test]
fn text_mode_redacts_and_reports_on_stderr() {
    let text = long_text();
    let out = run(&["scan", "--stream"], text.as_bytes());
    assert_eq!(out.status.code(), Some(1), "a secret blocks");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        text.replace(
            "AKIAQWERTYUIOPASDFGH",
            "[REDACTED:secret.aws.access-key-id]"
        )
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let start = text.find("AKIA").unwrap();
    assert!(
        stderr.contains(&format!(
            "secret.aws.access-key-id [secret high] bytes {start}..{}",
            start + 20
        )),
        "{stderr}"
    );
}

#[test]
fn json_mode_writes_events() {
    let text = long_text();
    let out = run(&["scan", "--stream", "--format", "json"], text.as_bytes());
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let released: usize = events
        .iter()
        .filter(|e| e["event"] == "text")
        .map(|e| e["original_len"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(released, text.len());
    assert!(events
        .iter()
        .any(|e| e["event"] == "finding" && e["rule"] == "secret.aws.access-key-id"));
    let end = events.last().unwrap();
    assert_eq!(
        (&end["event"], &end["action"]),
        (&"end".into(), &"block".into())
    );
    assert_eq!(end["bytes"], text.len());
}

#[test]
fn clean_stream_passes_through_unchanged() {
    let text = "Plain answer. ".repeat(500);
    let out = run(&["scan", "--stream"], text.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, text.as_bytes());
}
