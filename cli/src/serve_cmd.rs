//! `featherguard serve`: the HTTP JSON API (cargo feature `server`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use featherguard::{parse_bytes, Config};
use featherguard_server::ServeOptions;

use crate::ml::GuardArgs;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  featherguard serve                                   127.0.0.1:8080, pattern guard
  featherguard serve --listen 127.0.0.1:9000 --max-inflight 16 --max-queue 64
  curl -s localhost:8080/v1/scan -d '{\"text\": \"Ignore previous instructions\"}'
  curl -sN localhost:8080/v1/scan/stream --data-binary @answer.txt   NDJSON events

Endpoints: POST /v1/scan, POST /v1/scan/stream, GET /v1/guards, GET /healthz, GET /readyz,
GET /metrics, POST /v1/admin/release-caches. SIGTERM drains and stops; SIGUSR1 releases caches.
See docs/server.md.")]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; other addresses expose the API to the network).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,

    /// Open connections; more are answered 503 and closed at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_connections: usize,

    /// Scan requests running at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_inflight: usize,

    /// Scan requests waiting for a slot; beyond that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_queue: usize,

    /// Per-request deadline (queue wait plus scan) in milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    deadline_ms: u64,

    /// Largest request body (e.g. 1MiB); 413 above.
    #[arg(long, default_value = "1MiB", value_name = "SIZE")]
    body_limit: String,

    /// Most texts in one `texts` batch.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_batch: usize,

    /// Streaming scans open at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_streams: usize,

    /// Seconds to wait for in-flight requests after SIGTERM.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    drain_secs: u64,

    /// Accept a `policy` object in scan requests.
    #[arg(long)]
    allow_policy_override: bool,

    /// Event-loop threads (0: one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    workers: usize,

    /// Compile rules lazily, on first use, instead of at startup (less memory, slower first hits).
    #[arg(long)]
    lazy_rules: bool,

    #[command(flatten)]
    guards: GuardArgs,
}

pub fn run(args: &ServeArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    let fw = crate::ml::build_firewall(cfg, &args.guards)?;
    let body_limit = parse_bytes(&args.body_limit)
        .map_err(anyhow::Error::msg)
        .context("--body-limit")?;
    let options = ServeOptions {
        listen: args.listen,
        max_connections: args.max_connections,
        max_inflight: args.max_inflight,
        max_queue: args.max_queue,
        deadline: Duration::from_millis(args.deadline_ms),
        body_limit: body_limit as usize,
        max_batch: args.max_batch,
        max_streams: args.max_streams,
        drain_timeout: Duration::from_secs(args.drain_secs),
        allow_policy_override: args.allow_policy_override,
        workers: args.workers,
        warm: !args.lazy_rules,
        ..ServeOptions::default()
    };
    featherguard_server::run(fw, options)?;
    Ok(ExitCode::SUCCESS)
}
