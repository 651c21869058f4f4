//! Prometheus metrics (text exposition format), all named `featherguard_*`.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use featherguard_core::{Family as ThreatFamily, FirewallStats, ScanObserver, Verdict};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 5 µs .. ~5 s: pattern scans take microseconds, model loads seconds.
    Histogram::new(exponential_buckets(5e-6, 2.5, 16))
}

/// Every metric the server exports. Counters that mirror firewall counters (cache, cascade) are
/// copied from a stats snapshot at scrape time.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    verdicts: Family<Labels, Counter>,
    findings: Family<Labels, Counter>,
    guard_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    guard_errors: Family<Labels, Counter>,
    rejections: Family<Labels, Counter>,
    stream_bytes: Counter,
    inflight: Gauge,
    queued: Gauge,
    rss: Family<Labels, Gauge>,
    memory_limit: Gauge,
    guard_loaded: Family<Labels, Gauge>,
    guard_loads: Family<Labels, Counter<u64, AtomicU64>>,
    guard_load_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    guards_loaded: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
    cascade: Family<Labels, Counter>,
    open_connections: Gauge,
    refused_connections: Counter,
    /// The listener's live counters, read at scrape time.
    conn_counters: std::sync::OnceLock<(Arc<AtomicUsize>, Arc<AtomicUsize>)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("featherguard");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            verdicts: Family::default(),
            findings: Family::default(),
            guard_seconds: Family::new_with_constructor(latency_histogram),
            guard_errors: Family::default(),
            rejections: Family::default(),
            stream_bytes: Counter::default(),
            inflight: Gauge::default(),
            queued: Gauge::default(),
            rss: Family::default(),
            memory_limit: Gauge::default(),
            guard_loaded: Family::default(),
            guard_loads: Family::default(),
            guard_load_seconds: Family::default(),
            guards_loaded: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            cascade: Family::default(),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
            conn_counters: std::sync::OnceLock::new(),
            registry: Registry::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Request latency by endpoint, admission wait included",
            m.request_seconds.clone(),
        );
        r.register("verdicts", "Verdicts by action", m.verdicts.clone());
        r.register("findings", "Findings by family", m.findings.clone());
        r.register(
            "guard_duration_seconds",
            "Time per guard call (one call may scan a batch)",
            m.guard_seconds.clone(),
        );
        r.register(
            "guard_errors",
            "Inputs a guard failed on: each is a verdict carrying the guard's error (the fail mode decided it)",
            m.guard_errors.clone(),
        );
        r.register(
            "rejections",
            "Requests refused: overloaded, deadline, body_too_large, bad_request, draining",
            m.rejections.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes received on streaming scans",
            m.stream_bytes.clone(),
        );
        r.register(
            "inflight_requests",
            "Scan requests holding an admission slot",
            m.inflight.clone(),
        );
        r.register(
            "queued_requests",
            "Scan requests waiting for an admission slot",
            m.queued.clone(),
        );
        r.register(
            "rss_bytes",
            "Resident memory by kind (total, anon, file)",
            m.rss.clone(),
        );
        r.register(
            "memory_limit_bytes",
            "Configured RSS budget (0: none)",
            m.memory_limit.clone(),
        );
        r.register(
            "guard_loaded",
            "1 when a heavy guard's model is loaded",
            m.guard_loaded.clone(),
        );
        r.register(
            "guard_loads",
            "Model loads per heavy guard",
            m.guard_loads.clone(),
        );
        r.register(
            "guard_load_seconds",
            "Duration of the last model load",
            m.guard_load_seconds.clone(),
        );
        r.register(
            "guards_loaded",
            "Heavy guards loaded now",
            m.guards_loaded.clone(),
        );
        r.register("cache_hits", "Verdict cache hits", m.cache_hits.clone());
        r.register(
            "cache_misses",
            "Verdict cache misses",
            m.cache_misses.clone(),
        );
        r.register(
            "cache_entries",
            "Verdicts in the cache",
            m.cache_entries.clone(),
        );
        r.register(
            "cascade_scans",
            "Scans by whether heavy guards ran (ran, skipped)",
            m.cascade.clone(),
        );
        r.register(
            "open_connections",
            "Open client connections",
            m.open_connections.clone(),
        );
        r.register(
            "refused_connections",
            "Connections answered 503 because max_connections were open",
            m.refused_connections.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&vec![
                ("endpoint", endpoint.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.request_seconds
            .get_or_create(&vec![("endpoint", endpoint.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    pub fn verdict(&self, v: &Verdict) {
        self.verdicts
            .get_or_create(&vec![("action", v.action.as_str().to_string())])
            .inc();
        for f in &v.findings {
            self.finding(f.family);
        }
    }

    pub fn finding(&self, family: ThreatFamily) {
        self.findings
            .get_or_create(&vec![("family", family.as_str().to_string())])
            .inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Attach the listener's connection counters.
    pub(crate) fn connections(&self, open: Arc<AtomicUsize>, refused: Arc<AtomicUsize>) {
        let _ = self.conn_counters.set((open, refused));
    }

    pub fn stream_bytes(&self, n: usize) {
        self.stream_bytes.inc_by(n as u64);
    }

    /// Prometheus text, with snapshot values refreshed from `stats` and the admission counts.
    pub fn render(&self, stats: &FirewallStats, inflight: usize, queued: usize) -> String {
        self.inflight.set(inflight as i64);
        if let Some((open, refused)) = self.conn_counters.get() {
            self.open_connections
                .set(open.load(std::sync::atomic::Ordering::Relaxed) as i64);
            store(
                self.refused_connections.inner(),
                refused.load(std::sync::atomic::Ordering::Relaxed) as u64,
            );
        }
        self.queued.set(queued as i64);
        let rss = &stats.memory.rss;
        for (kind, v) in [("total", rss.total), ("anon", rss.anon), ("file", rss.file)] {
            self.rss
                .get_or_create(&vec![("kind", kind.to_string())])
                .set(v as i64);
        }
        self.memory_limit
            .set(stats.memory.limit_bytes.unwrap_or(0) as i64);
        let mut loaded = 0;
        for s in &stats.slots {
            let l = vec![("guard", s.name.clone())];
            let is_loaded = s.state == featherguard_core::SlotState::Loaded;
            loaded += i64::from(is_loaded);
            self.guard_loaded
                .get_or_create(&l)
                .set(i64::from(is_loaded));
            store(self.guard_loads.get_or_create(&l).inner(), s.loads);
            self.guard_load_seconds
                .get_or_create(&l)
                .set(s.load_ms.unwrap_or(0.0) / 1e3);
        }
        self.guards_loaded.set(loaded);
        if let Some(c) = &stats.cache {
            store(self.cache_hits.inner(), c.hits);
            store(self.cache_misses.inner(), c.misses);
            self.cache_entries.set(c.entries as i64);
        }
        let ran = vec![("heavy", "ran".to_string())];
        let skipped = vec![("heavy", "skipped".to_string())];
        store(
            self.cascade.get_or_create(&ran).inner(),
            stats.cascade.heavy_runs,
        );
        store(
            self.cascade.get_or_create(&skipped).inner(),
            stats.cascade.heavy_skipped,
        );
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn store(a: &AtomicU64, v: u64) {
    a.store(v, std::sync::atomic::Ordering::Relaxed);
}

impl ScanObserver for Metrics {
    fn guard_done(&self, guard: &str, _inputs: usize, elapsed: Duration, failed: usize) {
        let l = vec![("guard", guard.to_string())];
        self.guard_seconds
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
        if failed > 0 {
            // One per input the guard failed on: each is a verdict carrying this guard's error.
            self.guard_errors.get_or_create(&l).inc_by(failed as u64);
        }
    }
}
