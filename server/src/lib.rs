//! featherguard-server: `featherguard serve`, an HTTP JSON API in front of a [`Firewall`].
//!
//! Endpoints (see docs/server.md): `POST /v1/scan`, `POST /v1/scan/stream`, `GET /v1/guards`,
//! `GET /healthz`, `GET /readyz`, `GET /metrics`, `POST /v1/admin/release-caches`. Scans pass an
//! admission gate (bounded in-flight requests and queue, per-request deadline, body limit); overload
//! is answered with 503 and `Retry-After`. SIGTERM (or Ctrl-C) drains in-flight requests and stops;
//! SIGUSR1 releases caches.

mod admission;
mod api;
mod error;
mod listener;
mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::future::IntoFuture;

use featherguard_core::{Firewall, Guard, PatternGuard};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use admission::{Admission, Refusal};
pub use error::{ApiError, ServerError};
pub use metrics::Metrics;

/// How the server listens and protects itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// Address to listen on; loopback by default.
    pub listen: SocketAddr,
    /// Open connections; one over this is answered 503 and closed at once. HTTP/1.1 carries one
    /// request at a time per connection, so this bounds the requests waiting for a CPU.
    pub max_connections: usize,
    /// Scan requests running at once.
    pub max_inflight: usize,
    /// Scan requests waiting for a slot; beyond that, 503 at once.
    pub max_queue: usize,
    /// Longest a scan request may wait and run before it is answered 503.
    pub deadline: Duration,
    /// Largest request body in bytes (413 above).
    pub body_limit: usize,
    /// Most texts in one `texts` batch.
    pub max_batch: usize,
    /// Streaming scans open at once.
    pub max_streams: usize,
    /// Seconds clients are told to wait in `Retry-After`.
    pub retry_after_secs: u32,
    /// Longest the server waits for in-flight requests after SIGTERM.
    pub drain_timeout: Duration,
    /// Accept a `policy` object per request.
    pub allow_policy_override: bool,
    /// Pattern-only requests up to this many text bytes are scanned on the event loop, larger ones
    /// (and any with heavy guards) on the blocking pool.
    pub inline_bytes: usize,
    /// Event-loop threads (0: one per core).
    pub workers: usize,
    /// Compile every rule at startup instead of on first use: steady latency from the first
    /// request, at the cost of the memory of the compiled patterns.
    pub warm: bool,
    /// How often idle guards are unloaded and memory pressure is checked.
    pub maintain_every: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 256,
            max_inflight: 64,
            max_queue: 256,
            deadline: Duration::from_secs(2),
            body_limit: 1 << 20,
            max_batch: 256,
            max_streams: 64,
            retry_after_secs: 1,
            drain_timeout: Duration::from_secs(10),
            allow_policy_override: false,
            inline_bytes: 16 << 10,
            workers: 0,
            warm: true,
            maintain_every: Duration::from_secs(1),
        }
    }
}

/// State shared by the handlers.
pub(crate) struct App {
    fw: Arc<Firewall>,
    options: ServeOptions,
    admission: Admission,
    streams: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    /// Only the pattern guard runs: scans take microseconds.
    pattern_only: bool,
}

impl App {
    fn guard_names(&self) -> Vec<String> {
        let light = self.fw.guards().iter().map(|g| g.name().to_string());
        light
            .chain(self.fw.slots().iter().map(|s| s.name().to_string()))
            .collect()
    }
}

/// A server ready to run: the firewall (with the metrics observer attached) and its router.
pub struct Server {
    app: Arc<App>,
}

impl Server {
    /// Wrap `fw` (built with `Firewall::from_config`, heavy guards already added).
    pub fn new(mut fw: Firewall, options: ServeOptions) -> Result<Server, ServerError> {
        if fw.stream_scanner().is_none() {
            return Err(ServerError::NoPatternGuard);
        }
        if let (true, Some(p)) = (options.warm, fw.pattern()) {
            p.rules().warm();
        }
        let metrics = Arc::new(Metrics::new());
        fw.set_observer(metrics.clone());
        let pattern_only =
            fw.slots().is_empty() && fw.guards().iter().all(|g| g.name() == PatternGuard::NAME);
        Ok(Server {
            app: Arc::new(App {
                fw: Arc::new(fw),
                admission: Admission::new(options.max_inflight, options.max_queue),
                streams: Arc::new(Semaphore::new(options.max_streams.max(1))),
                metrics,
                draining: AtomicBool::new(false),
                pattern_only,
                options,
            }),
        })
    }

    /// The HTTP routes (for tests and embedding).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/scan", post(api::scan))
            .route("/v1/scan/stream", post(api::scan_stream))
            .route("/v1/guards", get(api::guards))
            .route("/v1/admin/release-caches", post(api::release_caches))
            .route("/healthz", get(api::healthz))
            .route("/readyz", get(api::readyz))
            .route("/metrics", get(api::metrics))
            .fallback(api::not_found)
            .layer(DefaultBodyLimit::max(self.app.options.body_limit))
            .with_state(self.app.clone())
    }

    /// Serve on `listener` until `shutdown` resolves, then stop accepting, drain in-flight requests
    /// for at most `drain_timeout`, and return.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let app = self.app.clone();
        let router = self.router();
        let maintenance = tokio::spawn(maintain(app.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut rx = stop_rx.clone();
        let listener = listener::Bounded::new(
            listener,
            app.options.max_connections,
            app.options.retry_after_secs,
        )?;
        let (open, refused) = listener.counters();
        app.metrics.connections(open, refused);
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = rx.wait_for(|s| *s).await;
        });
        let drain = app.options.drain_timeout;
        let app2 = app.clone();
        let trigger = async move {
            shutdown.await;
            app2.draining.store(true, Ordering::Relaxed);
            tracing::info!(
                inflight = app2.admission.inflight(),
                "shutting down: draining in-flight requests"
            );
            let _ = stop_tx.send(true);
            tokio::time::sleep(drain).await;
        };
        let result = tokio::select! {
            r = server.into_future() => r.map_err(ServerError::Io),
            () = trigger => {
                tracing::warn!(timeout_ms = drain.as_millis() as u64, "drain timeout: closing remaining connections");
                Ok(())
            }
        };
        maintenance.abort();
        result
    }
}

/// Periodic upkeep: idle unload, memory pressure.
async fn maintain(app: Arc<App>) {
    let mut tick = tokio::time::interval(app.options.maintain_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let fw = app.fw.clone();
        if let Ok(m) = tokio::task::spawn_blocking(move || fw.maintain()).await {
            if m.unloaded > 0 || m.cache_shed > 0 {
                tracing::info!(unloaded = m.unloaded, cache_shed = m.cache_shed, pressure = ?m.pressure, "maintenance");
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C; meanwhile SIGUSR1 releases `fw`'s caches.
async fn signals(fw: Arc<Firewall>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = usr1.recv() => {
                let fw = fw.clone();
                let n = tokio::task::spawn_blocking(move || fw.release_caches()).await.unwrap_or(0);
                tracing::info!(released_entries = n, "SIGUSR1: caches released");
            }
        }
    }
}

/// Listen on `addr` with a deep accept backlog: a burst of clients reconnecting at once must not
/// overflow it, or the kernel drops their SYNs and they wait a second for the retransmission.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // The kernel caps this at net.core.somaxconn.
    socket.listen(4096)
}

/// Run the server until SIGTERM/Ctrl-C on a runtime of its own (the `featherguard serve` command).
/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
pub fn run(fw: Firewall, options: ServeOptions) -> Result<(), ServerError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if options.workers > 0 {
        rt.worker_threads(options.workers);
    }
    // Blocking scans are bounded by admission; the pool needs no more threads than that.
    let rt = rt
        .max_blocking_threads(options.max_inflight.max(1) + 4)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = options.listen;
        let listener = bind(addr).map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let server = Server::new(fw, options)?;
        let fw = server.app.fw.clone();
        tracing::info!(addr = %listener.local_addr()?, guards = ?server.app.guard_names(), "featherguard serve listening");
        server.serve(listener, signals(fw)).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
