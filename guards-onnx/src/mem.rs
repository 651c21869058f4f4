//! Process memory as Linux reports it, and giving freed heap back to the OS.

/// Resident memory of this process, in bytes (`/proc/self/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// Total resident set (`VmRSS`).
    pub total: u64,
    /// Anonymous pages: heap, arenas, copies of weights (`RssAnon`).
    pub anon: u64,
    /// File-backed pages: mapped libraries and weights, reclaimable (`RssFile`).
    pub file: u64,
}

impl Rss {
    /// Reads the current figures; zeros where `/proc` is unavailable.
    pub fn now() -> Rss {
        let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Rss {
            total: field("VmRSS:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }
}

/// Returns freed heap pages to the OS. glibc keeps freed memory of a session's construction
/// (protobuf parsing, graph rewriting) in its arenas otherwise.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations at or above this size get their own mapping from glibc, unmapped again on free.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Keeps glibc from holding on to the activation buffers of past inferences. By default glibc
/// raises its mmap threshold each time a large block is freed (up to 32 MiB), so after a few
/// long inputs every activation buffer comes from the main heap, which fragments and is never
/// returned: measured +34 MB anonymous RSS after 1,024 varied prompts. A fixed threshold turns
/// the dynamic adjustment off, so those buffers are mapped and unmapped per call. Process-wide
/// and idempotent; called when a session loads.
pub fn bound_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters; it has no preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
