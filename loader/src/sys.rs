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
    /// Maps `len` zeroed bytes. With `huge_pages`, asks for transparent huge pages
    /// (`MADV_HUGEPAGE`); whether the kernel agreed is reported by [`Arena::huge_pages`].
    pub(crate) fn new(len: usize, huge_pages: bool) -> io::Result<Arena> {
        if len == 0 {
            return Ok(Arena {
                ptr: NonNull::<u64>::dangling().cast(),
                len: 0,
                huge_pages: false,
            });
        }
        let align = if huge_pages && len >= HUGE_PAGE {
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
        let mut arena = Arena {
            // SAFETY: mmap never returns null on success, and start >= base.
            ptr: unsafe { NonNull::new_unchecked(start as *mut u8) },
            len,
            huge_pages: false,
        };
        if huge_pages && len >= HUGE_PAGE {
            // SAFETY: advisory call on our own mapping.
            arena.huge_pages = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE)
            } == 0;
        }
        Ok(arena)
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
