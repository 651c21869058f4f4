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
