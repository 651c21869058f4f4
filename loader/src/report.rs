//! What a load did and how long it took.

use std::path::PathBuf;
use std::time::Duration;

/// How tensor bytes reached the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMethod {
    /// Zero-copy views into the file mapping; no tensor data was read.
    Mapped,
    /// Owned copies, dtypes unchanged.
    Copied,
    /// Owned copies, at least one tensor converted to another dtype.
    Converted,
}

/// Summary of one open or materialization, logged with `tracing` at info level and returned.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// The checkpoint files involved.
    pub files: Vec<PathBuf>,
    /// Number of tensors opened or materialized.
    pub tensors: usize,
    /// Tensor bytes read from the files (for `Mapped`: bytes made viewable).
    pub bytes: u64,
    /// Bytes of owned output (0 for `Mapped`; differs from `bytes` when converting).
    pub output_bytes: u64,
    /// Wall-clock time of the operation, in seconds.
    pub wall_secs: f64,
    pub method: LoadMethod,
    /// Worker threads used.
    pub threads: usize,
    /// Whether the destination was backed by transparent huge pages (`MADV_HUGEPAGE` accepted).
    pub huge_pages: bool,
    /// Fraction (0..=1) of the files' pages in the page cache before the operation, when probed.
    pub page_cache_resident: Option<f64>,
    /// How destination pages were created (`None` for `Mapped`): `CopyIntoFresh` when any
    /// were (see `fresh_fill_bytes`).
    pub page_fill: Option<crate::PageFill>,
    /// Destination bytes (alignment padding included) created already filled (`UFFDIO_COPY`),
    /// the rest zeroed then copied (with `PageFill::Auto`, the part after the switch).
    pub fresh_fill_bytes: u64,
    /// Seconds spent faulting in destination memory ahead of the copy, summed over threads
    /// (0 for `Mapped`, and with lazy prefaulting, where faults happen inside the copy).
    pub fault_secs: f64,
    /// Seconds spent reading/copying/converting into the destination, summed over threads.
    pub copy_secs: f64,
}

impl LoadReport {
    /// Throughput in GB/s (10^9 bytes per second) of `bytes` over `wall_secs`.
    pub fn gb_per_s(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.bytes as f64 / self.wall_secs / 1e9
        } else {
            f64::INFINITY
        }
    }

    pub(crate) fn new(method: LoadMethod, files: Vec<PathBuf>, wall: Duration) -> LoadReport {
        LoadReport {
            files,
            tensors: 0,
            bytes: 0,
            output_bytes: 0,
            wall_secs: wall.as_secs_f64(),
            method,
            threads: 1,
            huge_pages: false,
            page_cache_resident: None,
            page_fill: None,
            fresh_fill_bytes: 0,
            fault_secs: 0.0,
            copy_secs: 0.0,
        }
    }

    pub(crate) fn log(&self) {
        tracing::info!(
            files = self.files.len(),
            tensors = self.tensors,
            bytes = self.bytes,
            output_bytes = self.output_bytes,
            wall_ms = self.wall_secs * 1e3,
            gb_per_s = self.gb_per_s(),
            method = ?self.method,
            threads = self.threads,
            huge_pages = self.huge_pages,
            page_fill = ?self.page_fill,
            fresh_fill_bytes = self.fresh_fill_bytes,
            page_cache_resident = ?self.page_cache_resident,
            fault_ms = self.fault_secs * 1e3,
            copy_ms = self.copy_secs * 1e3,
            "safetensors load"
        );
    }
}
