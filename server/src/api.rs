//! The HTTP JSON API: scan, streaming scan, guards, health, readiness, metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use featherguard_core::{
    redact, Action, CascadeMode, FailMode, Input, Policy, ScanOptions, SlotState, Source,
    StreamEvent, Verdict,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::admission::Admitted;
use crate::error::ApiError;
use crate::App;

/// `POST /v1/scan` body: one text or a batch, with optional per-request choices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
    #[serde(default)]
    source: Source,
    /// Run only these guards (names from `GET /v1/guards`).
    guards: Option<Vec<String>>,
    /// A whole policy object replacing the configured one (missing fields take the built-in
    /// defaults); only when the server allows policy overrides.
    policy: Option<Policy>,
    cascade: Option<CascadeMode>,
    /// Add the text with secrets and PII replaced (`redacted` field of each verdict).
    #[serde(default)]
    redact: bool,
}

/// The verdict as the CLI prints it (`featherguard scan --format json`), plus `redacted` on request.
#[derive(Serialize)]
struct VerdictOut<'a> {
    #[serde(flatten)]
    verdict: &'a Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted: Option<String>,
}

#[derive(Serialize)]
struct BatchOut<'a> {
    verdicts: Vec<VerdictOut<'a>>,
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Wait for admission until the request's deadline, counting refusals.
async fn admit(app: &App) -> Result<Admitted, ApiError> {
    if app.draining.load(Ordering::Relaxed) {
        app.metrics.rejected("draining");
        return Err(ApiError::unavailable(
            "draining",
            "the server is shutting down",
            1,
        ));
    }
    let deadline = Instant::now() + app.options.deadline;
    app.admission.admit(deadline).await.map_err(|r| {
        app.metrics.rejected(r.as_str());
        ApiError::unavailable(
            match r {
                crate::admission::Refusal::Overloaded => "overloaded",
                crate::admission::Refusal::Deadline => "deadline_exceeded",
            },
            "too many requests in flight; retry later",
            app.options.retry_after_secs,
        )
    })
}

fn body_error(app: &App, e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        app.metrics.rejected("body_too_large");
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body over {} bytes", app.options.body_limit),
        )
    } else {
        app.metrics.rejected("bad_request");
        ApiError::bad_request("unreadable_body", e.body_text())
    }
}

impl ScanRequest {
    /// Parse and check a request against what the server allows.
    fn parse(app: &App, body: &[u8]) -> Result<ScanRequest, ApiError> {
        let req: ScanRequest = serde_json::from_slice(body).map_err(|e| {
            let code = if e.is_data() {
                "invalid_request"
            } else {
                "invalid_json"
            };
            ApiError::bad_request(code, e.to_string())
        })?;
        match (&req.text, &req.texts) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "give `text` or `texts`, not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "missing `text` (or `texts`)",
                ))
            }
            (None, Some(t)) if t.len() > app.options.max_batch => {
                return Err(ApiError::bad_request(
                    "batch_too_large",
                    format!(
                        "{} texts; at most {} per request",
                        t.len(),
                        app.options.max_batch
                    ),
                ))
            }
            _ => {}
        }
        if let Some(guards) = &req.guards {
            let known = app.guard_names();
            if let Some(unknown) = guards.iter().find(|g| !known.contains(g)) {
                return Err(ApiError::bad_request(
                    "unknown_guard",
                    format!(
                        "unknown guard `{unknown}` (configured: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some(p) = &req.policy {
            if !app.options.allow_policy_override {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "policy_override_not_allowed",
                    "this server does not accept per-request policies (start it with --allow-policy-override)",
                ));
            }
            p.validate()
                .map_err(|m| ApiError::bad_request("invalid_policy", m))?;
        }
        Ok(req)
    }

    fn options(&self) -> ScanOptions {
        ScanOptions {
            policy: self.policy.clone(),
            guards: self.guards.clone(),
            cascade: self.cascade,
        }
    }
}

/// `POST /v1/scan`.
pub async fn scan(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = StdInstant::now();
    let r = scan_inner(&app, body).await;
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    app.metrics
        .request("scan", resp.status().as_u16(), started.elapsed());
    resp
}

async fn scan_inner(
    app: &Arc<App>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The body is read (bounded by the body limit) before admission, so a slow client never holds
    // an in-flight slot.
    let body = body.map_err(|e| body_error(app, e))?;
    let req =
        ScanRequest::parse(app, &body).inspect_err(|_| app.metrics.rejected("bad_request"))?;
    let admitted = admit(app).await?;
    let total: usize = req.text.as_ref().map_or(0, |t| t.len())
        + req.texts.iter().flatten().map(|t| t.len()).sum::<usize>();
    // Short pattern-only scans take microseconds: run them here. Anything that may take long (a
    // model, a big input) goes to the blocking pool so the event loop keeps answering.
    let inline = app.pattern_only && total <= app.options.inline_bytes;
    let out = if inline {
        let out = run_scan(app, &req);
        drop(admitted);
        out
    } else {
        let app2 = app.clone();
        let deadline = Instant::now() + app.options.deadline;
        let job = tokio::task::spawn_blocking(move || {
            // The admission slot stays taken until the scan really ends, even past the deadline.
            let _admitted = admitted;
            run_scan(&app2, &req)
        });
        match tokio::time::timeout_at(deadline, job).await {
            Ok(Ok(out)) => out,
            Ok(Err(join)) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    join.to_string(),
                ))
            }
            Err(_) => {
                app.metrics.rejected("deadline");
                return Err(ApiError::unavailable(
                    "deadline_exceeded",
                    format!(
                        "scan took longer than the {} ms deadline",
                        app.options.deadline.as_millis()
                    ),
                    app.options.retry_after_secs,
                ));
            }
        }
    };
    Ok(json_response(StatusCode::OK, out))
}

/// Scan a parsed request; returns the JSON body.
fn run_scan(app: &App, req: &ScanRequest) -> Vec<u8> {
    let opts = req.options();
    let one = |text: &str, v: &Verdict| -> Option<String> {
        req.redact.then(|| redact(text, &v.findings))
    };
    if let Some(text) = &req.text {
        let v = app
            .fw
            .scan_with(&Input::new(text).with_source(req.source), &opts);
        app.metrics.verdict(&v);
        let out = VerdictOut {
            verdict: &v,
            redacted: one(text, &v),
        };
        return serde_json::to_vec(&out).unwrap_or_default();
    }
    let texts = req.texts.as_deref().unwrap_or_default();
    let inputs: Vec<Input<'_>> = texts
        .iter()
        .map(|t| Input::new(t).with_source(req.source))
        .collect();
    // The batched path (guards see the whole batch) has no per-call options; with options, scan one by one.
    let verdicts: Vec<Verdict> = if opts == ScanOptions::default() {
        app.fw.scan_batch(&inputs)
    } else {
        inputs.iter().map(|i| app.fw.scan_with(i, &opts)).collect()
    };
    verdicts.iter().for_each(|v| app.metrics.verdict(v));
    let out = BatchOut {
        verdicts: texts
            .iter()
            .zip(&verdicts)
            .map(|(t, v)| VerdictOut {
                verdict: v,
                redacted: one(t, v),
            })
            .collect(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Stop releasing text (and close the response) once the action reaches block.
    #[serde(default)]
    stop_on_block: bool,
}

/// `POST /v1/scan/stream`: the request body is raw text (e.g. chunked, as an LLM produces it); the
/// response is newline-delimited JSON events (`text`, `finding`, `end`) written as text is released.
pub async fn scan_stream(
    State(app): State<Arc<App>>,
    Query(q): Query<StreamQuery>,
    body: Body,
) -> Response {
    let started = StdInstant::now();
    let permit = match app.streams.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            app.metrics.rejected("overloaded");
            app.metrics.request("scan_stream", 503, started.elapsed());
            return ApiError::unavailable(
                "overloaded",
                "too many open streams",
                app.options.retry_after_secs,
            )
            .into_response();
        }
    };
    let Some(mut scanner) = app.fw.stream_scanner() else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_pattern_guard",
            "no pattern guard",
        )
        .into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let app2 = app.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut data = body.into_data_stream();
        let mut findings = 0usize;
        let mut failed = None;
        let mut stopped = false;
        while let Some(frame) = data.next().await {
            let bytes = match frame {
                Ok(b) => b,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            app2.metrics.stream_bytes(bytes.len());
            let mut chunk = scanner.push_bytes(&bytes);
            findings += chunk.findings.len();
            chunk
                .findings
                .iter()
                .for_each(|f| app2.metrics.finding(f.family));
            if q.stop_on_block && chunk.action == Action::Block {
                chunk.text.clear();
                chunk.original_len = 0;
                stopped = true;
            }
            if tx
                .send(events(&chunk.events().collect::<Vec<_>>()))
                .await
                .is_err()
            {
                return; // the client went away
            }
            if stopped {
                break;
            }
        }
        if !stopped && failed.is_none() {
            let last = scanner.finish();
            findings += last.findings.len();
            last.findings
                .iter()
                .for_each(|f| app2.metrics.finding(f.family));
            let _ = tx.send(events(&last.events().collect::<Vec<_>>())).await;
        }
        let mut tail = events(&[StreamEvent::End {
            action: scanner.action(),
            bytes: scanner.position(),
            findings,
        }])
        .to_vec();
        if let Some(e) = failed {
            tail.extend_from_slice(
                &serde_json::to_vec(&serde_json::json!({"event": "error", "message": e}))
                    .unwrap_or_default(),
            );
            tail.push(b'\n');
        }
        let _ = tx.send(Bytes::from(tail)).await;
        app2.metrics.request("scan_stream", 200, started.elapsed());
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn events(evs: &[StreamEvent<'_>]) -> Bytes {
    let mut out = Vec::new();
    for e in evs {
        if serde_json::to_writer(&mut out, e).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

/// `GET /v1/guards`: the firewall's stats (guards, load history, cache, memory, cascade).
pub async fn guards(State(app): State<Arc<App>>) -> Response {
    let started = StdInstant::now();
    let stats = app.fw.stats();
    let resp = Json(stats).into_response();
    app.metrics.request("guards", 200, started.elapsed());
    resp
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

#[derive(Serialize)]
struct GuardReadiness {
    name: String,
    /// Whether a scan can use it now: not a heavy guard whose last load failed (until a load
    /// succeeds), nor an unloaded one whose files or runtime library are missing.
    usable: bool,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    draining: bool,
    /// True when some heavy guard is unusable: verdicts are pattern-only and flagged (fail-open)
    /// or blocked (fail-closed).
    degraded: bool,
    fail_mode: FailMode,
    guards: Vec<GuardReadiness>,
}

/// `GET /readyz`: 200 when the server takes traffic, 503 while draining; says which guards are usable.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let stats = app.fw.stats();
    let mut guards: Vec<GuardReadiness> = stats
        .guards
        .iter()
        .map(|g| GuardReadiness {
            name: g.clone(),
            usable: true,
            state: "loaded",
            error: None,
        })
        .collect();
    for (s, slot) in stats.slots.iter().zip(app.fw.slots()) {
        // A failed load is reported until a load succeeds; a slot that is not loaded is also
        // checked (files, runtime library) without loading, so a fault shows before a scan hits it.
        let check = match s.state {
            SlotState::Failed => None,
            _ => slot.check().err(),
        };
        guards.push(GuardReadiness {
            name: s.name.clone(),
            usable: s.state != SlotState::Failed && check.is_none(),
            state: match s.state {
                SlotState::Loaded => "loaded",
                SlotState::Unloaded => "unloaded",
                SlotState::Failed => "failed",
            },
            error: s
                .last_error
                .clone()
                .or_else(|| check.map(|e| e.to_string())),
        });
    }
    let draining = app.draining.load(Ordering::Relaxed);
    let r = Readiness {
        ready: !draining,
        draining,
        degraded: guards.iter().any(|g| !g.usable),
        fail_mode: app.fw.policy().fail_mode,
        guards,
    };
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(r)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let stats = app.fw.stats();
    let text = app
        .metrics
        .render(&stats, app.admission.inflight(), app.admission.queued());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `POST /v1/admin/release-caches`: drop cached verdicts and return free heap (also on SIGUSR1).
pub async fn release_caches(State(app): State<Arc<App>>) -> Response {
    let fw = app.fw.clone();
    let n = tokio::task::spawn_blocking(move || fw.release_caches())
        .await
        .unwrap_or(0);
    Json(serde_json::json!({ "released_entries": n })).into_response()
}

/// Unknown routes: 404 with a JSON body.
pub async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see docs/server.md)",
    )
    .into_response()
}
