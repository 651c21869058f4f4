//! Thin, checked wrappers over the few Linux memory calls the loader needs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Huge-page size the arena aligns to (x86-64 and aarch64 PMD size with 4 KiB pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// CPU time this thread has used, in seconds: unlike wall time, not inflated while the thread
/// waits for a core on a busy machine.
pub(crate) fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec, which lives on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Fraction of the pages of `[ptr, ptr+len)` resident in memory (page cache for file maps).
pub(crate) fn resident_fraction(ptr: *const u8, len: usize) -> io::Result<f64> {
    if len == 0 {
        return Ok(1.0);
    }
    let page = page_size();
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: ptr is the page-aligned start of a live mapping of `len` bytes and `vec` holds one
    // byte per page of it, as mincore requires.
    let rc = unsafe { libc::mincore(ptr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let resident = vec.iter().filter(|&&b| b & 1 == 1).count();
    Ok(resident as f64 / pages as f64)
}

/// Asks the kernel to drop `file`'s clean pages from the page cache (for cold-cache
/// measurements without root). Pages still mapped elsewhere may stay.
pub(crate) fn evict_page_cache(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Starts asynchronous readahead of `[offset, offset+len)` of `file` into the page cache.
/// Advisory: errors are ignored by callers.
pub(crate) fn fadvise_willneed(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: plain syscall on a valid descriptor.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// A private anonymous mapping used as the destination of materialized tensors: zero-filled,
/// 2 MiB-aligned when large so transparent huge pages can back it.
#[derive(Debug)]
pub(crate) struct Arena {
    ptr: NonNull<u8>,
    len: usize,
    huge_pages: bool,
}

// SAFETY: the arena exclusively owns its mapping; shared access is read-only through `&self`
// and writes happen through `&mut self` or through disjoint ranges handed out by the loader.
unsafe impl Send for Arena {}
// SAFETY: see Send.
unsafe impl Sync for Arena {}

impl Arena {
    /// Maps `len` zeroed bytes, 2 MiB-aligned when at least that long (so huge pages, if
    /// requested later, line up with the loader's 2 MiB-multiple windows).
    pub(crate) fn new(len: usize) -> io::Result<Arena> {
        if len == 0 {
            return Ok(Arena {
                ptr: NonNull::<u64>::dangling().cast(),
                len: 0,
                huge_pages: false,
            });
        }
        let align = if len >= HUGE_PAGE {
            HUGE_PAGE
        } else {
            page_size()
        };
        let map_len = len
            .checked_add(align)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: anonymous private mapping with no address hint; checked for MAP_FAILED below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = raw as usize;
        let start = base.next_multiple_of(align);
        let end = start + len.next_multiple_of(page_size());
        // Give back the unaligned head and the tail beyond the rounded length.
        // SAFETY: both ranges lie inside the mapping just created and are page-aligned.
        unsafe {
            if start > base {
                libc::munmap(raw, start - base);
            }
            if base + map_len > end {
                libc::munmap(end as *mut libc::c_void, base + map_len - end);
            }
        }
        Ok(Arena {
            // SAFETY: mmap never returns null on success, and start >= base.
            ptr: unsafe { NonNull::new_unchecked(start as *mut u8) },
            len,
            huge_pages: false,
        })
    }

    /// Asks for transparent huge pages (`MADV_HUGEPAGE`) on pages not yet faulted in; a no-op
    /// for arenas smaller than one huge page; whether the kernel agreed is
    /// [`Arena::huge_pages`].
    pub(crate) fn request_huge_pages(&mut self) {
        if self.len >= HUGE_PAGE {
            let len = self.len.next_multiple_of(page_size());
            // SAFETY: advisory call on our own mapping.
            self.huge_pages =
                unsafe { libc::madvise(self.ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) } == 0;
        }
    }

    /// Whether `MADV_HUGEPAGE` was accepted for this arena.
    pub(crate) fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Faults in `[offset, offset+len)` for writing ahead of use, in one call where the kernel
    /// supports `MADV_POPULATE_WRITE` (5.14+), else by touching one byte per page.
    ///
    /// # Safety
    /// The range must be in bounds and not concurrently accessed by anyone else.
    pub(crate) unsafe fn prefault(&self, offset: usize, len: usize) {
        debug_assert!(offset + len <= self.len);
        if len == 0 {
            return;
        }
        let page = page_size();
        let start = (self.ptr.as_ptr() as usize + offset) & !(page - 1);
        let end = self.ptr.as_ptr() as usize + offset + len;
        // SAFETY: [start, end) lies within our mapping (start rounds down inside it).
        let rc = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            let mut p = self.ptr.as_ptr() as usize + offset;
            while p < end {
                // SAFETY: caller guarantees exclusive access to the range; writing the zero the
                // page already holds only forces the fault.
                unsafe { std::ptr::write_volatile(p as *mut u8, 0) };
                p = (p & !(page - 1)) + page;
            }
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the (page-rounded) range this arena kept.
            unsafe {
                libc::munmap(
                    self.ptr.as_ptr() as *mut libc::c_void,
                    self.len.next_multiple_of(page_size()),
                );
            }
        }
    }
}

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_API: u64 = 0xAA;
const UFFDIO: u32 = 0xAA;
/// Only user-mode faults are reported: what unprivileged processes may ask for (Linux 5.11+).
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_API: libc::Ioctl = libc::_IOWR::<UffdioApi>(UFFDIO, 0x3F);
const UFFDIO_REGISTER: libc::Ioctl = libc::_IOWR::<UffdioRegister>(UFFDIO, 0x00);
const UFFDIO_UNREGISTER: libc::Ioctl = libc::_IOR::<UffdioRange>(UFFDIO, 0x01);
const UFFDIO_COPY: libc::Ioctl = libc::_IOWR::<UffdioCopy>(UFFDIO, 0x03);

/// A `userfaultfd` registered over an arena in missing mode, so its pages can be created
/// already holding their bytes (`UFFDIO_COPY`) instead of being zeroed on first touch and then
/// overwritten. Nothing may touch an unfilled page of the range while this lives (the access
/// would wait for a fault handler that does not exist); dropping it unregisters the range, after
/// which unfilled pages are ordinary zero-fill-on-demand memory again.
#[derive(Debug)]
pub(crate) struct FreshPages {
    fd: std::os::fd::OwnedFd,
    start: usize,
    len: usize,
}

impl FreshPages {
    /// Registers the arena's pages from byte `from` (a page multiple) to its page-rounded end;
    /// none of them may have been touched. Fails where userfaultfd is unavailable: kernels
    /// before 5.11, seccomp filters (container defaults often deny it), or an empty range.
    pub(crate) fn register(arena: &Arena, from: usize) -> io::Result<FreshPages> {
        use std::os::fd::FromRawFd;
        debug_assert!(from % page_size() == 0);
        let len = arena.len.next_multiple_of(page_size()).saturating_sub(from);
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let raw =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as libc::c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: the argument is the struct this request expects.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let start = arena.as_ptr() as usize + from;
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: the range is the arena's own page-aligned mapping; the struct matches.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if reg.ioctls & (1 << 0x03) == 0 {
            // Registered, but this kernel offers no UFFDIO_COPY on it: undo via drop.
            drop(FreshPages { fd, start, len });
            return Err(io::ErrorKind::Unsupported.into());
        }
        Ok(FreshPages { fd, start, len })
    }

    /// Creates the pages at `[offset, offset + src.len())` from the arena's start holding `src`.
    ///
    /// # Safety
    /// `offset` and `src.len()` must be multiples of the page size, the range inside the
    /// registered part of the arena, and none of its pages filled before (by any thread).
    pub(crate) unsafe fn fill(&self, arena: &Arena, offset: usize, src: &[u8]) -> io::Result<()> {
        let page = page_size();
        debug_assert!(offset % page == 0 && src.len() % page == 0);
        let offset = (arena.as_ptr() as usize + offset)
            .checked_sub(self.start)
            .expect("fill below the registered range");
        debug_assert!(offset + src.len() <= self.len);
        let (mut done, mut stalled) = (0, 0);
        while done < src.len() {
            let mut copy = UffdioCopy {
                dst: (self.start + offset + done) as u64,
                src: src[done..].as_ptr() as u64,
                len: (src.len() - done) as u64,
                mode: 0,
                copy: 0,
            };
            // SAFETY: dst is an unfilled, registered range (caller), src a live buffer of len.
            let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut copy) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            // EAGAIN: the address space changed under the call (another thread mapping or
            // unmapping); `copy` says how much was filled, and the rest is retried.
            let progress = usize::try_from(copy.copy).unwrap_or(0);
            stalled = if progress == 0 { stalled + 1 } else { 0 };
            if err.raw_os_error() != Some(libc::EAGAIN) || stalled > 1000 {
                return Err(err);
            }
            done += progress;
        }
        Ok(())
    }
}

impl Drop for FreshPages {
    fn drop(&mut self) {
        let mut range = UffdioRange {
            start: self.start as u64,
            len: self.len as u64,
        };
        // SAFETY: unregistering the range registered in `register`; the fd closes after.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut range) };
    }
}
