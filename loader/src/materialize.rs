//! Owned, aligned copies of selected tensors, made in parallel.
//!
//! All selected tensors go into one anonymous arena (64-byte aligned per tensor, 2 MiB-aligned
//! overall so transparent huge pages can back it). The arena is cut into aligned windows of
//! `chunk_bytes`, so every huge page belongs to exactly one window; worker threads claim windows
//! in file order and fault in each window's destination in one call (`MADV_POPULATE_WRITE`),
//! then either `pread` into it (the
//! default: source pages never enter this process) or copy out of the mapping and drop the
//! consumed source pages (`MADV_DONTNEED`; the page cache keeps the data). Either way resident
//! memory stays near one copy of the selection. On the machines measured, faulting in fresh
//! destination memory, not copying, is the dominant cost (see docs/loader.md).

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use memmap2::UncheckedAdvice;

use crate::checkpoint::{effective_threads, Checkpoint};
use crate::convert::{convert, supported};
use crate::dtype::{cast_slice, cast_slice_mut, Element};
use crate::file::{cast_error, SafeTensorsFile, TensorView};
use crate::header::TensorInfo;
use crate::report::{LoadMethod, LoadReport};
use crate::sys::{page_size, thread_cpu_secs, Arena, FreshPages, HUGE_PAGE};
use crate::{Dtype, LoadError};

/// Alignment of every materialized tensor, in bytes (a cache line; enough for AVX-512 loads).
pub const TENSOR_ALIGN: usize = 64;

/// Source bytes staged per `pread` when converting (fits in L2 alongside its output).
const STAGE_BYTES: usize = 128 << 10;

/// [`PageFill::Auto`] switches after this many slow windows (one could be a preemption).
const AUTO_SLOW_WINDOWS: usize = 2;

/// Destination bytes assembled per `UFFDIO_COPY` with [`PageFill::CopyIntoFresh`] (stays in
/// L2 between being filled and being copied into the new pages).
const FRESH_BLOCK_BYTES: usize = 256 << 10;

/// How materialization reads the source bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRead {
    /// `pread` straight into the destination (through a small per-thread buffer when
    /// converting): no source pages are ever mapped into this process, and a file truncated
    /// underneath is a short read, hence [`LoadError::Truncated`], never SIGBUS.
    Pread,
    /// Copy out of the file mapping, releasing consumed pages as configured.
    Mmap,
}

/// When destination memory is faulted in (first touch of fresh anonymous memory, which the
/// kernel zeroes, is the dominant cost of a materialization; see docs/loader.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefault {
    /// Not explicitly: the copy faults each page in as it first writes it.
    Lazy,
    /// Each worker faults in a window's destination (`MADV_POPULATE_WRITE`) right before copying
    /// into it, so one thread's faulting overlaps another's copying.
    PerWindow,
    /// All workers first fault in the whole destination (equal 2 MiB-aligned shares), then copy.
    UpFront,
}

/// How destination pages come into existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageFill {
    /// Zero-then-copy (huge pages if asked) while fresh pages fault in at
    /// `auto_switch_gb_per_s` (default 1 GB/s) per thread-CPU-second or better; once two windows fault in
    /// slower, the rest is [`PageFill::CopyIntoFresh`]. On
    /// VMs whose hypervisor reclaims guest memory the guest has freed (free page reporting),
    /// fresh huge pages fault in at 0.1-0.5 GB/s until it backs them again, against 3-8 GB/s
    /// when they are backed (docs/loader.md); copying into fresh 4 KiB pages runs at
    /// 1.5-2.5 GB/s per thread either way. Needs [`Prefault::PerWindow`] (it times each
    /// window's fault-in) and windows that are a multiple of 2 MiB; otherwise it is
    /// `ZeroThenCopy`.
    Auto,
    /// The kernel zeroes each fresh page when it is first touched (see [`Prefault`]), then the
    /// copy overwrites it.
    ZeroThenCopy,
    /// Each fresh 4 KiB page is created already holding its bytes (`userfaultfd`'s
    /// `UFFDIO_COPY`, assembled in a small L2-resident block), so no page is zeroed first.
    /// The result is the same private anonymous memory, in 4 KiB pages (no huge pages).
    /// Where userfaultfd is unavailable (Linux < 5.11, seccomp filters such as many container
    /// defaults) or `chunk_bytes` is not a multiple of the page size, falls back to
    /// `ZeroThenCopy`; the report says which ran.
    CopyIntoFresh,
}

/// How to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    /// How source bytes are read.
    pub read: SourceRead,
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Convert F16/BF16/F32 tensors to this dtype (must itself be F16, BF16 or F32); other
    /// dtypes are copied unchanged. `None` copies everything as stored.
    pub convert: Option<Dtype>,
    /// How destination pages are created.
    pub page_fill: PageFill,
    /// With [`PageFill::Auto`]: a window whose fault-in runs below this many GB/s (per
    /// thread) counts as slow.
    pub auto_switch_gb_per_s: f64,
    /// Ask for transparent huge pages on the destination (`MADV_HUGEPAGE`) when the pages are
    /// zeroed then copied.
    pub huge_pages: bool,
    /// When destination memory is faulted in (with [`PageFill::ZeroThenCopy`]).
    pub prefault: Prefault,
    /// Drop consumed source pages from this process (`MADV_DONTNEED`) as pieces complete.
    pub release_source: bool,
    /// Fault in each piece's source with `MADV_POPULATE_READ` before copying from it.
    pub populate_source: bool,
    /// Unit of work, in destination bytes: the arena is cut at multiples of this (rounded up to
    /// a multiple of 8, so no element straddles two windows).
    pub chunk_bytes: usize,
    /// Windows of readahead (`POSIX_FADV_WILLNEED` / `MADV_WILLNEED`) issued ahead of the window
    /// being copied, so a cold disk streams while destination memory is faulted in; 0 disables.
    pub readahead_chunks: usize,
    /// Record page-cache residency of the source files (via `mincore`) in the report.
    pub probe_page_cache: bool,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        MaterializeOptions {
            read: SourceRead::Pread,
            threads: 0,
            convert: None,
            page_fill: PageFill::Auto,
            auto_switch_gb_per_s: 1.0,
            huge_pages: true,
            prefault: Prefault::PerWindow,
            release_source: true,
            populate_source: false,
            chunk_bytes: 4 << 20,
            readahead_chunks: 8,
            probe_page_cache: false,
        }
    }
}

/// Owned copies of tensors in one aligned arena, each 64-byte aligned, little-endian.
#[derive(Debug)]
pub struct Materialized {
    source: PathBuf,
    arena: Arena,
    tensors: Vec<OwnedMeta>,
    by_name: HashMap<String, usize>,
    report: LoadReport,
}

#[derive(Debug)]
struct OwnedMeta {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte offset in the arena (multiple of TENSOR_ALIGN).
    offset: usize,
    /// Byte length.
    len: usize,
}

/// A materialized tensor, read-only.
#[derive(Debug, Clone, Copy)]
pub struct OwnedTensor<'a> {
    source: &'a Path,
    meta: &'a OwnedMeta,
    data: &'a [u8],
}

/// A materialized tensor, writable in place.
#[derive(Debug)]
pub struct OwnedTensorMut<'a> {
    source: &'a Path,
    meta: &'a OwnedMeta,
    data: &'a mut [u8],
}

macro_rules! tensor_accessors {
    () => {
        /// Tensor name.
        pub fn name(&self) -> &str {
            &self.meta.name
        }
        /// Element type (after any conversion).
        pub fn dtype(&self) -> Dtype {
            self.meta.dtype
        }
        /// Dimensions, outermost first.
        pub fn shape(&self) -> &[usize] {
            &self.meta.shape
        }
        /// Number of elements.
        pub fn num_elements(&self) -> usize {
            self.meta.shape.iter().product()
        }
    };
}

impl<'a> OwnedTensor<'a> {
    tensor_accessors!();

    /// The bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The data as `&[T]`; fails only when `T` does not match the dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T], LoadError> {
        cast_slice(self.meta.dtype, self.data)
            .map_err(|e| cast_error::<T>(e, self.source, &self.meta.name, self.meta.dtype))
    }
}

impl OwnedTensorMut<'_> {
    tensor_accessors!();

    /// The bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.data
    }

    /// The data as `&mut [T]`; fails only when `T` does not match the dtype.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T], LoadError> {
        let (source, meta) = (self.source, self.meta);
        cast_slice_mut(meta.dtype, self.data)
            .map_err(|e| cast_error::<T>(e, source, &meta.name, meta.dtype))
    }
}

impl Materialized {
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when nothing was selected.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// What this materialization did.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Bytes of owned tensor data (excluding alignment padding).
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len as u64).sum()
    }

    /// The tensor `name`, if it was materialized.
    pub fn get(&self, name: &str) -> Option<OwnedTensor<'_>> {
        self.by_name.get(name).map(|&i| self.owned(i))
    }

    /// The tensor `name`, writable, if it was materialized.
    pub fn get_mut(&mut self, name: &str) -> Option<OwnedTensorMut<'_>> {
        let &i = self.by_name.get(name)?;
        let meta = &self.tensors[i];
        // SAFETY: the range is inside the arena and `&mut self` excludes every other borrow.
        let data = unsafe {
            std::slice::from_raw_parts_mut(self.arena.as_ptr().add(meta.offset), meta.len)
        };
        Some(OwnedTensorMut {
            source: &self.source,
            meta,
            data,
        })
    }

    /// All tensors, in source order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = OwnedTensor<'_>> {
        (0..self.tensors.len()).map(|i| self.owned(i))
    }

    fn owned(&self, i: usize) -> OwnedTensor<'_> {
        let meta = &self.tensors[i];
        // SAFETY: in bounds of the arena, which lives as long as `&self`; writes need `&mut self`.
        let data = unsafe {
            std::slice::from_raw_parts(self.arena.as_ptr().add(meta.offset).cast_const(), meta.len)
        };
        OwnedTensor {
            source: &self.source,
            meta,
            data,
        }
    }
}

struct Job<'a> {
    file: &'a SafeTensorsFile,
    info: &'a TensorInfo,
    to: Dtype,
    dst_offset: usize,
}

/// The part of one tensor that falls into a window.
struct Piece {
    job: usize,
    /// Element range within the tensor.
    elems: (usize, usize),
}

/// One unit of work: an aligned window of the arena and the tensor pieces inside it.
struct Window {
    /// Destination byte range actually written (first piece's start to last piece's end).
    dst: Range<usize>,
    /// Indices into the piece list.
    pieces: Range<usize>,
}

/// Seconds summed over workers: faulting in destination memory, and reading/converting.
#[derive(Default)]
struct Phases {
    fault: Duration,
    copy: Duration,
}

impl Checkpoint {
    /// Materializes every tensor.
    pub fn materialize_all(&self, opts: &MaterializeOptions) -> Result<Materialized, LoadError> {
        self.materialize(|_| true, opts)
    }

    /// Materializes the named tensors; a name that does not exist is an error.
    pub fn materialize_names(
        &self,
        names: &[&str],
        opts: &MaterializeOptions,
    ) -> Result<Materialized, LoadError> {
        for name in names {
            self.tensor(name)?;
        }
        let wanted: std::collections::HashSet<&str> = names.iter().copied().collect();
        self.materialize(|t| wanted.contains(t.name()), opts)
    }

    /// Materializes tensors whose name starts with `prefix` (e.g. one layer).
    pub fn materialize_prefix(
        &self,
        prefix: &str,
        opts: &MaterializeOptions,
    ) -> Result<Materialized, LoadError> {
        self.materialize(|t| t.name().starts_with(prefix), opts)
    }

    /// Materializes the tensors for which `select` returns true.
    pub fn materialize(
        &self,
        mut select: impl FnMut(&TensorView<'_>) -> bool,
        opts: &MaterializeOptions,
    ) -> Result<Materialized, LoadError> {
        let started = Instant::now();
        if let Some(to) = opts.convert {
            if !to.is_convertible_float() {
                return Err(LoadError::InvalidConversionTarget {
                    path: self.path().to_owned(),
                    to,
                });
            }
        }
        let mut jobs = Vec::new();
        let mut offset = 0usize;
        let mut used_files = Vec::new();
        for file in self.files() {
            let mut used = false;
            for view in file.tensors()? {
                if !select(&view) {
                    continue;
                }
                let from = view.dtype();
                let to = match opts.convert {
                    Some(to) if from.is_convertible_float() => to,
                    _ => from,
                };
                debug_assert!(supported(from, to));
                offset = offset.next_multiple_of(TENSOR_ALIGN);
                jobs.push(Job {
                    file,
                    info: view.info(),
                    to,
                    dst_offset: offset,
                });
                offset += view.num_elements() * to.size();
                used = true;
            }
            if used {
                used_files.push(file);
            }
        }
        let probe = if opts.probe_page_cache {
            Some(residency(&used_files)?)
        } else {
            None
        };
        let mut arena = Arena::new(offset).map_err(|e| LoadError::Allocation {
            path: self.path().to_owned(),
            bytes: offset as u64,
            cause: e,
        })?;
        let window = opts.chunk_bytes.max(1).next_multiple_of(8);
        // Registered before any page of the arena exists.
        let fresh = (opts.page_fill == PageFill::CopyIntoFresh && window % page_size() == 0)
            .then(|| FreshPages::register(&arena, 0).ok())
            .flatten();
        if fresh.is_none() && opts.huge_pages {
            arena.request_huge_pages();
        }
        let auto = (opts.page_fill == PageFill::Auto
            && opts.prefault == Prefault::PerWindow
            && window % HUGE_PAGE == 0)
            .then_some(opts.auto_switch_gb_per_s * 1e9);
        let spans = jobs
            .iter()
            .map(|j| (j.dst_offset, j.info.num_elements(), j.to.size()));
        let (pieces, windows) = plan_windows(spans, window);
        let threads = effective_threads(opts.threads).min(windows.len()).max(1);
        let plan = Plan {
            jobs: &jobs,
            pieces: &pieces,
            windows: &windows,
            arena: &arena,
            window,
            auto,
            claims: Mutex::new(Claims {
                next: 0,
                slow: 0,
                fresh_from: if fresh.is_some() { 0 } else { usize::MAX },
            }),
            fresh: fresh.map(OnceLock::from).unwrap_or_default(),
        };
        let phases = plan.run(threads, opts);
        let fresh_from = plan.claims.lock().map_or(0, |c| c.fresh_from);
        // Unregistered before the arena is handed out (or dropped, on error).
        drop(plan);
        let phases = phases?;
        let fresh_bytes: usize = windows.iter().skip(fresh_from).map(|w| w.dst.len()).sum();
        let page_fill = if fresh_bytes > 0 {
            PageFill::CopyIntoFresh
        } else {
            PageFill::ZeroThenCopy
        };

        let tensors: Vec<OwnedMeta> = jobs
            .iter()
            .map(|j| OwnedMeta {
                name: j.info.name.clone(),
                dtype: j.to,
                shape: j.info.shape.clone(),
                offset: j.dst_offset,
                len: j.info.num_elements() * j.to.size(),
            })
            .collect();
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let converted = jobs.iter().any(|j| j.to != j.info.dtype);
        let mut report = LoadReport::new(
            if converted {
                LoadMethod::Converted
            } else {
                LoadMethod::Copied
            },
            used_files.iter().map(|f| f.path().to_owned()).collect(),
            started.elapsed(),
        );
        report.tensors = jobs.len();
        report.bytes = jobs.iter().map(|j| j.info.byte_len() as u64).sum();
        report.output_bytes = tensors.iter().map(|t| t.len as u64).sum();
        report.threads = threads;
        report.huge_pages = arena.huge_pages();
        report.page_fill = Some(page_fill);
        report.fresh_fill_bytes = fresh_bytes as u64;
        report.fault_secs = phases.fault.as_secs_f64();
        report.copy_secs = phases.copy.as_secs_f64();
        report.page_cache_resident = probe;
        report.log();
        Ok(Materialized {
            source: self.path().to_owned(),
            arena,
            tensors,
            by_name,
            report,
        })
    }
}

fn residency(files: &[&SafeTensorsFile]) -> Result<f64, LoadError> {
    let (mut resident, mut total) = (0.0, 0.0);
    for f in files {
        resident += f.page_cache_residency()? * f.len() as f64;
        total += f.len() as f64;
    }
    Ok(if total > 0.0 { resident / total } else { 1.0 })
}

/// Cuts the arena into windows at multiples of `window` bytes (a multiple of 8, hence of every
/// element size: tensors start 64-byte aligned, so no element straddles a window boundary).
/// `spans` gives each job's (destination offset, element count, destination element size), in
/// increasing offset order. Windows without tensor bytes are skipped.
fn plan_windows(
    spans: impl Iterator<Item = (usize, usize, usize)>,
    window: usize,
) -> (Vec<Piece>, Vec<Window>) {
    let mut pieces = Vec::new();
    let mut windows: Vec<Window> = Vec::new();
    for (ji, (start, n, size)) in spans.enumerate() {
        let mut e = 0;
        while e < n {
            let at = start + e * size;
            let window_start = at - at % window;
            let end = n.min((window_start + window - start) / size);
            pieces.push(Piece {
                job: ji,
                elems: (e, end),
            });
            let dst = at..start + end * size;
            match windows.last_mut() {
                Some(w) if w.dst.start >= window_start => {
                    w.dst.end = dst.end;
                    w.pieces.end = pieces.len();
                }
                _ => windows.push(Window {
                    dst,
                    pieces: pieces.len() - 1..pieces.len(),
                }),
            }
            e = end;
        }
    }
    (pieces, windows)
}

/// Everything the workers share.
struct Plan<'p, 'f> {
    jobs: &'p [Job<'f>],
    pieces: &'p [Piece],
    windows: &'p [Window],
    arena: &'p Arena,
    /// Window size in bytes.
    window: usize,
    /// With [`PageFill::Auto`]: the fault-in rate (bytes/s per thread) below which a window
    /// counts as slow; `None` otherwise.
    auto: Option<f64>,
    claims: Mutex<Claims>,
    /// Set once pages from window `fresh_from` on are created filled (`UFFDIO_COPY`).
    fresh: OnceLock<FreshPages>,
}

/// Which window is next, and from which window on pages are created filled.
struct Claims {
    next: usize,
    /// Windows whose fault-in ran below `auto_switch_gb_per_s` (counting stops mattering past
    /// [`AUTO_SLOW_WINDOWS`]).
    slow: usize,
    /// First window copied into fresh pages (`usize::MAX`: none).
    fresh_from: usize,
}

impl Plan<'_, '_> {
    /// Claims the next window; returns its index and whether to create its pages filled.
    fn claim(&self) -> (usize, bool) {
        let mut c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let i = c.next;
        c.next += 1;
        (i, i >= c.fresh_from)
    }

    /// Records a window's fault-in rate (over the faulting thread's CPU time, so a thread
    /// merely waiting for a core does not count as slow); after enough slow windows, registers the pages of
    /// every window not yet claimed for `UFFDIO_COPY`. Claims are held meanwhile, so no worker
    /// can be touching those pages: claimed windows lie below, and windows (multiples of 2 MiB
    /// here) share no huge page.
    fn note_fault_rate(&self, bytes: usize, secs: f64) {
        match self.auto {
            Some(rate) if (bytes as f64) < rate * secs => {}
            _ => return,
        }
        let mut c = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        c.slow += 1;
        if c.slow != AUTO_SLOW_WINDOWS || c.fresh_from != usize::MAX {
            return;
        }
        let Some(w) = self.windows.get(c.next) else {
            return;
        };
        let from = w.dst.start - w.dst.start % self.window;
        // Unavailable (old kernel, seccomp): the rest stays zero-then-copy; `slow` is past the
        // threshold now, so this is not retried.
        if let Ok(fresh) = FreshPages::register(self.arena, from) {
            if self.fresh.set(fresh).is_ok() {
                c.fresh_from = c.next;
            }
        }
    }

    fn run(&self, threads: usize, opts: &MaterializeOptions) -> Result<Phases, LoadError> {
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<(usize, LoadError)>> = Mutex::new(None);
        let phases = Mutex::new(Phases::default());
        let barrier = Barrier::new(threads);
        let ahead = opts.readahead_chunks;
        let window_readahead = |w: &Window| {
            for piece in &self.pieces[w.pieces.clone()] {
                readahead(&self.jobs[piece.job], piece, opts);
            }
        };
        if ahead > 0 {
            self.windows.iter().take(ahead).for_each(window_readahead);
        }
        let worker = |me: usize| {
            let mut mine = Phases::default();
            let arena = self.arena;
            // With every page registered up front, nothing may be touched before it is filled.
            let prefault = if self.fresh.get().is_some() {
                Prefault::Lazy
            } else {
                opts.prefault
            };
            if prefault == Prefault::UpFront {
                let t = Instant::now();
                let share = arena.len().div_ceil(threads).next_multiple_of(HUGE_PAGE);
                let begin = (me * share).min(arena.len());
                let end = (begin + share).min(arena.len());
                // SAFETY: shares are disjoint and in bounds, and nobody writes before the barrier.
                unsafe { arena.prefault(begin, end - begin) };
                mine.fault += t.elapsed();
                barrier.wait();
            }
            let mut stage = Vec::new();
            let mut block = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let (i, fresh) = self.claim();
                let Some(window) = self.windows.get(i) else {
                    break;
                };
                if let Some(later) = self.windows.get(i + ahead).filter(|_| ahead > 0) {
                    window_readahead(later);
                }
                if prefault == Prefault::PerWindow && !fresh {
                    let (t, cpu) = (Instant::now(), thread_cpu_secs());
                    // SAFETY: windows are disjoint and in bounds; this worker owns this one.
                    unsafe { arena.prefault(window.dst.start, window.dst.len()) };
                    mine.fault += t.elapsed();
                    self.note_fault_rate(window.dst.len(), thread_cpu_secs() - cpu);
                }
                let t = Instant::now();
                let result = match self.fresh.get().filter(|_| fresh) {
                    Some(f) => self.fill_fresh(window, f, opts, &mut block, &mut stage),
                    None => self.pieces[window.pieces.clone()]
                        .iter()
                        .try_for_each(|p| self.fill_in_place(p, opts, &mut stage)),
                };
                mine.copy += t.elapsed();
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                        *slot = Some((i, e));
                    }
                }
            }
            let mut all = phases.lock().unwrap_or_else(|p| p.into_inner());
            all.fault += mine.fault;
            all.copy += mine.copy;
        };
        if threads <= 1 {
            worker(0);
        } else {
            std::thread::scope(|s| {
                for me in 1..threads {
                    s.spawn(move || worker(me));
                }
                worker(0);
            });
        }
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((_, e)) => Err(e),
            None => Ok(phases.into_inner().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Copies a piece straight into the arena (pages zeroed by the kernel on first touch).
    fn fill_in_place(
        &self,
        piece: &Piece,
        opts: &MaterializeOptions,
        stage: &mut Vec<u8>,
    ) -> Result<(), LoadError> {
        let job = &self.jobs[piece.job];
        let size = job.to.size();
        let start = job.dst_offset + piece.elems.0 * size;
        let len = (piece.elems.1 - piece.elems.0) * size;
        debug_assert!(start + len <= self.arena.len());
        // SAFETY: pieces partition every tensor's destination range and tensors do not
        // overlap, so no other thread reads or writes these bytes while the scope runs; the
        // arena outlives the scope.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.arena.as_ptr().add(start), len) };
        fill(job, piece.elems, dst, opts, stage)
    }

    /// Creates the pages of a window already filled: each block of it is assembled (tensor
    /// bytes, zeros in padding) in an L2-sized buffer and handed to `UFFDIO_COPY`.
    fn fill_fresh(
        &self,
        window: &Window,
        fresh: &FreshPages,
        opts: &MaterializeOptions,
        block: &mut Vec<u8>,
        stage: &mut Vec<u8>,
    ) -> Result<(), LoadError> {
        let page = page_size();
        if block.is_empty() {
            // Page-aligned so each copy starts on a page boundary of the source too.
            block.resize(FRESH_BLOCK_BYTES + page, 0);
        }
        let skip = block.as_ptr().align_offset(page);
        let block = &mut block[skip..skip + FRESH_BLOCK_BYTES];
        let end = window.dst.end.next_multiple_of(page);
        let mut at = window.dst.start - window.dst.start % page;
        while at < end {
            let stop = (at + block.len()).min(end);
            let buf = &mut block[..stop - at];
            let mut cursor = at;
            for piece in &self.pieces[window.pieces.clone()] {
                let job = &self.jobs[piece.job];
                let size = job.to.size();
                let first = (job.dst_offset + piece.elems.0 * size).max(at);
                let last = (job.dst_offset + piece.elems.1 * size).min(stop);
                if first >= last {
                    continue;
                }
                buf[cursor - at..first - at].fill(0);
                let elems = (
                    (first - job.dst_offset) / size,
                    (last - job.dst_offset) / size,
                );
                fill(job, elems, &mut buf[first - at..last - at], opts, stage)?;
                cursor = last;
            }
            buf[cursor - at..].fill(0);
            // SAFETY: [at, stop) is page-aligned, inside the registered arena (windows end
            // within its page-rounded length) and filled only here: windows are multiples of
            // the page size, so no two windows share a page, and blocks do not overlap.
            unsafe { fresh.fill(self.arena, at, buf) }.map_err(|e| LoadError::Allocation {
                path: self.jobs[0].file.path().to_owned(),
                bytes: (stop - at) as u64,
                cause: e,
            })?;
            at = stop;
        }
        Ok(())
    }
}

/// Absolute file offset and length of the source bytes of a tensor's elements `elems`.
fn src_range(job: &Job<'_>, elems: (usize, usize)) -> (usize, usize) {
    let size = job.info.dtype.size();
    let (tensor_begin, _) = job.file.data_range(job.info);
    (tensor_begin + elems.0 * size, (elems.1 - elems.0) * size)
}

/// Advisory readahead of a piece's source; failures only lose the overlap.
fn readahead(job: &Job<'_>, piece: &Piece, opts: &MaterializeOptions) {
    let (start, len) = src_range(job, piece.elems);
    let _ = match opts.read {
        SourceRead::Pread => {
            crate::sys::fadvise_willneed(job.file.raw_file(), start as u64, len as u64)
        }
        SourceRead::Mmap => job
            .file
            .map()
            .advise_range(memmap2::Advice::WillNeed, start, len),
    };
}

/// Reads elements `elems` of a tensor into `dst`, converting as the job says.
fn fill(
    job: &Job<'_>,
    elems: (usize, usize),
    dst: &mut [u8],
    opts: &MaterializeOptions,
    stage: &mut Vec<u8>,
) -> Result<(), LoadError> {
    let (from, to) = (job.info.dtype, job.to);
    let (e0, e1) = elems;
    let (src_start, src_len) = src_range(job, elems);
    debug_assert_eq!(dst.len(), (e1 - e0) * to.size());
    if opts.read == SourceRead::Pread {
        let read = |buf: &mut [u8], at: usize| {
            job.file
                .raw_file()
                .read_exact_at(buf, at as u64)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        match job.file.check_length(Some(&job.info.name)) {
                            Err(truncated) => truncated,
                            Ok(()) => LoadError::io(job.file.path(), "read", e),
                        }
                    }
                    _ => LoadError::io(job.file.path(), "read", e),
                })
        };
        if from == to {
            read(dst, src_start)?;
        } else {
            // Convert through a small staging block that stays in L2, instead of reading the
            // whole piece first and converting it back out of L3/DRAM.
            let elems_per_block = (STAGE_BYTES / from.size()).max(1);
            stage.resize(elems_per_block * from.size(), 0);
            let (mut e, end) = (0, e1 - e0);
            while e < end {
                let n = elems_per_block.min(end - e);
                let src = &mut stage[..n * from.size()];
                read(src, src_start + e * from.size())?;
                convert(src, from, &mut dst[e * to.size()..(e + n) * to.size()], to);
                e += n;
            }
        }
        return Ok(());
    }
    // Narrow the SIGBUS window: a file truncated since mapping is caught here, before its pages
    // are touched.
    job.file.check_length(Some(&job.info.name))?;
    let map = job.file.map();
    if opts.populate_source {
        // Advisory: a failure (e.g. an old kernel) only loses the batching.
        let _ = map.advise_range(memmap2::Advice::PopulateRead, src_start, src_len);
    }
    convert(&map[src_start..src_start + src_len], from, dst, to);
    if opts.release_source && src_len > 0 {
        // SAFETY: the mapping is a read-only shared file mapping: MADV_DONTNEED only drops this
        // process's page-table entries, and any later access re-reads identical bytes from the
        // page cache. Advisory, so a failure is harmless.
        let _ =
            unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, src_start, src_len) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tensor byte is in exactly one piece, pieces lie inside their window, and no window
    /// (hence no huge page, for windows that are multiples of it) is split between two.
    fn check(spans: &[(usize, usize, usize)], window: usize) -> usize {
        let (pieces, windows) = plan_windows(spans.iter().copied(), window);
        let mut covered = vec![0usize; spans.len()];
        let mut last_window = None;
        for w in &windows {
            let k = w.dst.start / window;
            assert_eq!((w.dst.end - 1) / window, k, "window crosses a boundary");
            assert!(last_window < Some(k), "two units share aligned window {k}");
            last_window = Some(k);
            let mut at = w.dst.start;
            for p in &pieces[w.pieces.clone()] {
                let (start, _, size) = spans[p.job];
                assert!(p.elems.0 < p.elems.1);
                assert_eq!(covered[p.job], p.elems.0, "pieces of a tensor are in order");
                covered[p.job] = p.elems.1;
                let (b, e) = (start + p.elems.0 * size, start + p.elems.1 * size);
                assert!(b >= at && e <= w.dst.end);
                at = e;
            }
            assert_eq!(at, w.dst.end);
        }
        for (job, &(_, n, _)) in spans.iter().enumerate() {
            assert_eq!(covered[job], n, "tensor {job} fully covered");
        }
        windows.len()
    }

    #[test]
    fn windows_are_aligned_and_partition_the_tensors() {
        // A layer of the synthetic checkpoint: 16 MiB, 16 MiB, 6 MiB, then an 8 KiB norm that
        // pushes every later tensor off 2 MiB alignment.
        let sizes = [(1 << 22, 4), (1 << 23, 2), (3 << 20, 2), (2048, 4)];
        let mut spans = Vec::new();
        let mut offset = 0;
        for _ in 0..3 {
            for (n, size) in sizes {
                offset = usize::next_multiple_of(offset, TENSOR_ALIGN);
                spans.push((offset, n, size));
                offset += n * size;
            }
        }
        let windows = check(&spans, 4 << 20);
        assert_eq!(windows, offset.div_ceil(4 << 20));
        // Small windows split tensors; tiny and empty tensors share or skip windows.
        check(&[(0, 15, 4), (64, 0, 4), (64, 4, 2), (128, 3, 8)], 8);
        check(&[(0, 15, 4), (64, 0, 4), (64, 4, 2), (128, 3, 8)], 64);
        assert_eq!(check(&[(0, 0, 4)], 64), 0);
    }
}
