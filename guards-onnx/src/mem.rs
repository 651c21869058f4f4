//! Keeping ONNX Runtime's memory returnable: glibc heap retention and paging out the runtime's
//! libraries after an unload. (RSS figures and heap trimming are `featherguard_core`'s.)

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Allocations at or above this size get their own mapping from glibc, unmapped again on free.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Keeps glibc from holding on to memory the model used. Process-wide and idempotent; called when
/// a session loads.
///
/// - A fixed mmap threshold: by default glibc raises it each time a large block is freed (up to
///   32 MiB), so after a few long inputs every activation buffer comes from the main heap, which
///   fragments and is never returned: measured +34 MB anonymous RSS after 1,024 varied prompts.
///   Fixed, those buffers are mapped and unmapped per call.
/// - The trim threshold that the dynamic rule would pair with it (twice the mmap threshold): the
///   dynamic rule may already have raised it to megabytes before this runs, and a thread arena only
///   gives its free top back when it exceeds the threshold.
pub fn bound_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters; it has no preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
    }
}

/// glibc's default largest fastbin block on 64-bit targets (`64 * sizeof(size_t) / 4` bytes).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const DEFAULT_MXFAST: i32 = (64 * std::mem::size_of::<usize>() / 4) as i32;

/// glibc's default padding kept above a trimmed heap top (`glibc.malloc.top_pad`, 128 KiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const DEFAULT_TOP_PAD: i32 = 128 * 1024;

/// Runs `free` (an unload dropping the model) with glibc's fastbins off and no top padding, returns
/// free heap to the kernel, and restores both.
///
/// Why: glibc parks freed blocks of up to 128 bytes in fastbins without merging them. `malloc_trim`
/// merges them into the top of a thread arena but only trims the main arena's top, so the arena of
/// a thread that built the tokenizer or ran the session kept its whole emptied top resident after
/// an unload (3.4 MiB measured; how much depended on allocation order). With fastbins off, every
/// free merges at once and the free that empties a thread arena trims it. A first `malloc_trim`
/// merges what is already parked (the inference thread's cached blocks, freed as it exited) so the
/// model's frees can merge through it. Off only for the unload: kept off for the whole process,
/// the request workers' arenas of a server kept ~1 MiB more after an idle unload (medians of 9 and
/// 6 runs of `scripts/server/load_ml.sh`, docs/server.md). The top padding is what a trimmed
/// thread arena keeps above its top for the next growth (128 KiB each); during the unload there is
/// no next growth to save a system call for.
pub fn release_merged<T>(free: impl FnOnce() -> T) -> T {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters and may be called at any time;
    // blocks parked in fastbins meanwhile are merged by the next consolidation.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
        libc::mallopt(libc::M_TOP_PAD, 0);
    }
    featherguard_core::release_free_heap();
    let out = free();
    featherguard_core::release_free_heap();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_MXFAST, DEFAULT_MXFAST);
        libc::mallopt(libc::M_TOP_PAD, DEFAULT_TOP_PAD);
    }
    out
}

/// Shared objects this process has mapped (paths from `/proc/self/maps`); empty where it cannot
/// be read. Compared before and after the runtime's `dlopen` to learn which libraries it brought.
pub fn mapped_libraries() -> std::collections::BTreeSet<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|l| maps_entry(l).map(|(_, path)| path))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".so"))
        })
        .map(Path::to_path_buf)
        .collect()
}

/// `(start..end, path)` of one `/proc/self/maps` line with a file path.
fn maps_entry(line: &str) -> Option<(Range<usize>, &Path)> {
    // address perms offset dev inode pathname (padded with spaces)
    let mut f = line.splitn(6, ' ');
    let range = f.next()?;
    let path = f.nth(4)?.trim_start();
    if !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start..end, Path::new(path)))
}

/// Asks the kernel to reclaim the resident pages of every mapping of the files `libraries` (the
/// ONNX Runtime library and the shared objects only it brought in, e.g. libstdc++) with
/// `madvise(MADV_PAGEOUT)`; returns the bytes of mappings advised.
///
/// Why: ort loads ONNX Runtime with `dlopen` and keeps it for the life of the process (its API
/// table is process-wide and cannot be reset), so an idle unload cannot unmap the library. What
/// can go is the ~18 MiB of its code and read-only data that loading and inference made resident:
/// after the session is dropped nothing runs it, and `MADV_PAGEOUT` (Linux 5.4+) drops those clean
/// file pages from this process's resident set without changing the mapping. They fault back in
/// from the page cache (or the file) when the next load runs the library again. The advice never
/// changes memory contents; pages the kernel cannot reclaim (written copy-on-write pages without
/// swap, pages other processes map too) simply stay. On older kernels the call fails with
/// `EINVAL` and nothing happens, which is the fallback.
pub fn page_out_libraries(libraries: &[PathBuf]) -> u64 {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let mut advised = 0;
        for (range, path) in maps.lines().filter_map(maps_entry) {
            if !libraries.iter().any(|l| l == path) {
                continue;
            }
            // SAFETY: the range is a whole mapping of this process as the kernel lists it, and
            // MADV_PAGEOUT is non-destructive (contents are preserved and fault back in), so no
            // memory the program uses changes; an unmapped or changed range only fails the call.
            let rc = unsafe {
                libc::madvise(
                    range.start as *mut libc::c_void,
                    range.end - range.start,
                    libc::MADV_PAGEOUT,
                )
            };
            if rc != 0 {
                // EINVAL: a kernel without MADV_PAGEOUT; no other mapping will do better.
                return advised;
            }
            advised += (range.end - range.start) as u64;
        }
        advised
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = libraries;
        0
    }
}

/// Which pages of this process's file mappings were resident at one moment: taken before a load,
/// so the unload can page out the file pages that loading and running the model made resident
/// ([`ResidentFiles::page_out_new`]). One bit per page; empty where `/proc/self/pagemap` cannot be
/// read.
#[derive(Debug, Default)]
pub struct ResidentFiles {
    /// Present bits per mapping, keyed by the mapping's start address.
    mappings: BTreeMap<usize, (Range<usize>, Vec<u64>)>,
}

impl ResidentFiles {
    /// The resident pages of every private file mapping now (code and read-only data of the
    /// binary and its shared objects; `skip` mappings are left out).
    pub fn now(skip: &[PathBuf]) -> ResidentFiles {
        let mut mappings = BTreeMap::new();
        #[cfg(target_os = "linux")]
        if let Some(mut pagemap) = Pagemap::open() {
            for range in private_file_mappings(skip) {
                if let Some(bits) = pagemap.present(&range) {
                    mappings.insert(range.start, (range, bits));
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = skip;
        ResidentFiles { mappings }
    }

    /// Asks the kernel to reclaim (`MADV_PAGEOUT`) the pages of private file mappings that are
    /// resident now but were not when `self` was taken; returns the bytes advised.
    ///
    /// Why: the model's load and inference run code of this binary and of shared objects that a
    /// pattern-only process never touches (tokenizer, session and guard code: ~1 MiB of the
    /// binary measured). Those clean file pages stay in the resident set after the unload until
    /// the kernel needs memory. The advice never changes contents; a page faults back in from the
    /// page cache (or the file) when next used. The kernel skips pages another process maps too
    /// (libc), and anonymous copy-on-write pages without swap; it reclaims whole page-cache folios,
    /// so an older page that shares a folio with a new one goes too and faults back in when used.
    pub fn page_out_new(&self, skip: &[PathBuf]) -> u64 {
        #[cfg(target_os = "linux")]
        {
            let Some(mut pagemap) = Pagemap::open() else {
                return 0;
            };
            let page = page_size();
            let mut advised = 0;
            for range in private_file_mappings(skip) {
                let Some(now) = pagemap.present(&range) else {
                    continue;
                };
                let before = self
                    .mappings
                    .get(&range.start)
                    .filter(|(r, _)| *r == range)
                    .map(|(_, b)| b.as_slice());
                let new = |i: usize| bit(&now, i) && !before.is_some_and(|b| bit(b, i));
                let pages = (range.end - range.start) / page;
                let mut i = 0;
                while i < pages {
                    if !new(i) {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < pages && new(i) {
                        i += 1;
                    }
                    let len = (i - start) * page;
                    // SAFETY: a page-aligned range inside a mapping the kernel just listed for this
                    // process; MADV_PAGEOUT preserves contents (pages fault back in), so no memory
                    // the program uses changes, and a range unmapped meanwhile only fails the call.
                    let rc = unsafe {
                        libc::madvise(
                            (range.start + start * page) as *mut libc::c_void,
                            len,
                            libc::MADV_PAGEOUT,
                        )
                    };
                    if rc != 0 {
                        // EINVAL: a kernel without MADV_PAGEOUT; no other range will do better.
                        return advised;
                    }
                    advised += len as u64;
                }
            }
            advised
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = skip;
            0
        }
    }
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

/// Private (`p`) file mappings of this process other than `skip`'s files.
#[cfg(target_os = "linux")]
fn private_file_mappings(skip: &[PathBuf]) -> Vec<Range<usize>> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter(|l| {
            l.split(' ')
                .nth(1)
                .is_some_and(|perms| perms.ends_with('p'))
        })
        .filter_map(maps_entry)
        .filter(|(_, path)| !skip.iter().any(|s| s == path))
        .map(|(range, _)| range)
        .collect()
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// `/proc/self/pagemap`: one 64-bit entry per virtual page; bit 63 = present in RAM, bit 61 = a
/// file page (not an anonymous copy-on-write copy, which cannot be paged out without swap).
/// Readable without privileges (only the frame numbers are hidden).
#[cfg(target_os = "linux")]
struct Pagemap(std::fs::File);

#[cfg(target_os = "linux")]
impl Pagemap {
    fn open() -> Option<Pagemap> {
        std::fs::File::open("/proc/self/pagemap").ok().map(Pagemap)
    }

    /// Bits of the pages of `range` that are resident file pages, `None` if the entries cannot be
    /// read.
    fn present(&mut self, range: &Range<usize>) -> Option<Vec<u64>> {
        use std::os::unix::fs::FileExt;
        let page = page_size();
        let pages = (range.end - range.start) / page;
        let mut raw = vec![0u8; pages * 8];
        self.0
            .read_exact_at(&mut raw, (range.start / page * 8) as u64)
            .ok()?;
        let mut bits = vec![0u64; pages.div_ceil(64)];
        for (i, e) in raw.chunks_exact(8).enumerate() {
            let entry = u64::from_ne_bytes(e.try_into().ok()?);
            if entry >> 63 & 1 == 1 && entry >> 61 & 1 == 1 {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Some(bits)
    }
}
