//! The process's own memory: cheap RSS samples and the soft/hard budget over them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};

/// Resident memory of this process in bytes, split by what backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rss {
    /// All resident pages, in bytes.
    pub total: u64,
    /// Resident anonymous pages (heap, stacks, copies of models), in bytes; what limits really cost.
    pub anon: u64,
    /// Resident file-backed and shared pages (code, mapped model files), in bytes; reclaimable.
    pub file: u64,
}

impl Rss {
    /// Sample from `/proc/self/statm` (one short read, no allocation beyond the read buffer).
    /// `None` where the file does not exist (not Linux) or cannot be parsed.
    pub fn sample() -> Option<Rss> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let mut fields = statm
            .split_ascii_whitespace()
            .skip(1)
            .map(|f| f.parse::<u64>().ok());
        let resident = fields.next()??;
        let shared = fields.next()??;
        let page = page_size();
        Some(Rss {
            total: resident * page,
            anon: resident.saturating_sub(shared) * page,
            file: shared * page,
        })
    }
}

/// The kernel's detailed memory figures for this process from `/proc/self/status`, in bytes. A
/// longer read and parse than [`Rss::sample`]: for reports and diagnostics, not per-scan checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcStatus {
    /// Resident set (`VmRSS`), bytes.
    pub rss: u64,
    /// Peak resident set since start (`VmHWM`), bytes.
    pub peak: u64,
    /// Resident anonymous pages (`RssAnon`), bytes.
    pub anon: u64,
    /// Resident file-backed and shared pages (`RssFile` + `RssShmem`), bytes.
    pub file: u64,
}

impl ProcStatus {
    /// Reads the figures; `None` where `/proc/self/status` does not exist (not Linux).
    pub fn read() -> Option<ProcStatus> {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .map(|text| ProcStatus::parse(&text))
    }

    /// Parses `/proc/<pid>/status` text; a missing field reads as 0.
    pub fn parse(text: &str) -> ProcStatus {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        ProcStatus {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:") + field("RssShmem:"),
        }
    }
}

/// The kernel's page size, read once from the auxiliary vector (`AT_PAGESZ`); 4 KiB if unreadable.
fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        auxv.chunks_exact(16)
            .map(|e| {
                let key = u64::from_ne_bytes(e[..8].try_into().unwrap_or_default());
                let val = u64::from_ne_bytes(e[8..].try_into().unwrap_or_default());
                (key, val)
            })
            .find(|&(k, _)| k == AT_PAGESZ)
            .map_or(4096, |(_, v)| v)
    })
}

/// Give freed heap memory back to the kernel. glibc keeps freed small-chunk arenas mapped, so
/// unloading a model does not lower RSS until this runs; elsewhere it does nothing.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim has no preconditions; it only walks glibc's own arenas under their locks.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The `[memory]` config section: a limit on this process's RSS and the thresholds acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// RSS limit in bytes (`"512 MiB"` or a number); `None` = no budget. The environment variable
    /// `FEATHERGUARD_MEMORY_LIMIT` overrides it (see [`MemoryConfig::with_env`]).
    #[serde(deserialize_with = "de_opt_bytes")]
    pub limit_bytes: Option<u64>,
    /// Fraction of the limit above which caches are shed and idle guards unloaded (0.8).
    pub soft_ratio: f32,
    /// Fraction of the limit above which new model loads are refused (0.95).
    pub hard_ratio: f32,
    /// Minimum time between two RSS samples in milliseconds; decisions in between reuse the last one.
    pub sample_every_ms: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            limit_bytes: None,
            soft_ratio: 0.8,
            hard_ratio: 0.95,
            sample_every_ms: 100,
        }
    }
}

/// Name of the environment variable that sets [`MemoryConfig::limit_bytes`].
pub const MEMORY_LIMIT_ENV: &str = "FEATHERGUARD_MEMORY_LIMIT";

impl MemoryConfig {
    /// This config with `limit_bytes` taken from `FEATHERGUARD_MEMORY_LIMIT` when that is set.
    pub fn with_env(mut self) -> Result<MemoryConfig, String> {
        if let Ok(v) = std::env::var(MEMORY_LIMIT_ENV) {
            self.limit_bytes =
                Some(parse_bytes(&v).map_err(|e| format!("{MEMORY_LIMIT_ENV}: {e}"))?);
        }
        Ok(self)
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok = |r: f32| r.is_finite() && r > 0.0 && r <= 1.0;
        if !ok(self.soft_ratio) || !ok(self.hard_ratio) || self.soft_ratio > self.hard_ratio {
            return Err("memory: need 0 < soft_ratio <= hard_ratio <= 1".into());
        }
        Ok(())
    }
}

/// Parse a byte size: a plain number of bytes, or a number with a unit (`k`, `KiB`, `MB`, `MiB`, `G`...;
/// decimal units are powers of 1000, binary ones and bare letters powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 512MiB)"))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        _ => return Err(format!("`{s}`: unknown unit `{unit}`")),
    };
    let bytes = n * mult;
    if bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large (at most 2^64 - 1 bytes)"));
    }
    Ok(bytes as u64)
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(b)) => Ok(Some(b)),
        Some(Size::Text(t)) => parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Where sampled RSS stands against the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pressure {
    /// Below the soft threshold (or no budget).
    Normal,
    /// Above the soft threshold: shed caches, unload idle guards.
    Soft,
    /// Above the hard threshold: refuse new model loads.
    Hard,
}

/// Samples RSS at most every `sample_every_ms` and classifies it against the configured budget.
/// Shared by the firewall's slots and caches; cheap to call on every scan.
#[derive(Debug)]
pub struct MemoryBudget {
    config: MemoryConfig,
    origin: Instant,
    /// Milliseconds since `origin` of the last sample, plus one (0 = never sampled).
    sampled_at: AtomicU64,
    /// Last sampled total RSS in bytes.
    last_rss: AtomicU64,
}

impl MemoryBudget {
    pub fn new(config: MemoryConfig) -> MemoryBudget {
        MemoryBudget {
            config,
            origin: Instant::now(),
            sampled_at: AtomicU64::new(0),
            last_rss: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// Total RSS in bytes, resampled when the last sample is older than `sample_every_ms`.
    pub fn rss(&self) -> u64 {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let at = self.sampled_at.load(Ordering::Relaxed);
        if at == 0 || now.saturating_sub(at) >= self.config.sample_every_ms {
            self.resample()
        } else {
            self.last_rss.load(Ordering::Relaxed)
        }
    }

    /// Sample RSS now, whatever the interval (after a load or an unload).
    pub fn resample(&self) -> u64 {
        let rss = Rss::sample().map_or(0, |r| r.total);
        self.last_rss.store(rss, Ordering::Relaxed);
        self.sampled_at.store(
            self.origin.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
        rss
    }

    /// The pressure for a given RSS figure.
    pub fn classify(&self, rss: u64) -> Pressure {
        match (self.hard_threshold(), self.soft_threshold()) {
            (Some(hard), _) if rss >= hard => Pressure::Hard,
            (_, Some(soft)) if rss >= soft => Pressure::Soft,
            _ => Pressure::Normal,
        }
    }

    /// RSS in bytes from which loads are refused; `None` without a limit.
    pub fn hard_threshold(&self) -> Option<u64> {
        self.threshold(self.config.hard_ratio)
    }

    /// RSS in bytes from which caches are shed and quiet guards unloaded; `None` without a limit.
    pub fn soft_threshold(&self) -> Option<u64> {
        self.threshold(self.config.soft_ratio)
    }

    fn threshold(&self, ratio: f32) -> Option<u64> {
        // Ratios are written as decimals; rounding undoes f32's representation error (0.8 -> 0.80000001).
        let r = (f64::from(ratio) * 1e6).round() / 1e6;
        self.config
            .limit_bytes
            .map(|l| (l as f64 * r).round() as u64)
    }

    /// The pressure now (from a possibly cached sample).
    pub fn pressure(&self) -> Pressure {
        self.classify(self.rss())
    }

    /// How long a sample stays valid.
    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.config.sample_every_ms)
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(MemoryConfig::default())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn proc_status_parses_kib_fields_to_bytes() {
        let text = "Name:\tx\nVmHWM:\t  200 kB\nVmRSS:\t  150 kB\nRssAnon:\t 100 kB\nRssFile:\t 40 kB\nRssShmem:\t 10 kB\n";
        let s = ProcStatus::parse(text);
        assert_eq!(
            (s.rss, s.peak, s.anon, s.file),
            (150 * 1024, 200 * 1024, 100 * 1024, 50 * 1024)
        );
        assert_eq!(ProcStatus::parse("garbage"), ProcStatus::default());
    }

    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2MB").unwrap(), 2_000_000);
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
    }

    /// Found by the `config` fuzz target: a size past `u64` silently became `u64::MAX` bytes.
    #[test]
    fn oversized_sizes_are_errors() {
        assert!(parse_bytes("99999999999999999999999999 GB").is_err());
        assert!(parse_bytes("18446744073709551616").is_err());
        assert_eq!(parse_bytes("16 GiB").unwrap(), 16 << 30);
    }

    #[test]
    fn thresholds_classify() {
        let b = MemoryBudget::new(MemoryConfig {
            limit_bytes: Some(1000),
            ..MemoryConfig::default()
        });
        assert_eq!(b.classify(799), Pressure::Normal);
        assert_eq!(b.classify(800), Pressure::Soft);
        assert_eq!(b.classify(950), Pressure::Hard);
        assert_eq!(MemoryBudget::default().classify(u64::MAX), Pressure::Normal);
    }

    #[test]
    fn rss_is_sampled_on_linux() {
        if let Some(r) = Rss::sample() {
            assert!(r.total > 0 && r.anon + r.file == r.total);
        }
    }
}
