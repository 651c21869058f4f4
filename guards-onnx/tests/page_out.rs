//! Paging out the file pages that became resident after a snapshot, as an unload does for the
//! code only the model ran (checked without the runtime, on a file of the test's own).
#![cfg(target_os = "linux")]

use std::os::unix::fs::FileExt;

use featherguard_onnx::mem::ResidentFiles;

/// Pagemap entries of `pages` pages from `addr`: bit 63 = resident.
fn resident(addr: usize, pages: usize) -> Vec<bool> {
    let f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut raw = vec![0u8; pages * 8];
    f.read_exact_at(&mut raw, (addr / 4096 * 8) as u64).unwrap();
    raw.chunks_exact(8)
        .map(|e| u64::from_ne_bytes(e.try_into().unwrap()) >> 63 == 1)
        .collect()
}

/// Why this machine cannot run the check, if it cannot: MADV_PAGEOUT needs Linux 5.4, and tmpfs
/// pages have nowhere to go without swap.
fn unsupported(dir: &std::path::Path) -> Option<&'static str> {
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_dir.as_ptr(), &mut fs) } == 0 && fs.f_type == libc::TMPFS_MAGIC {
        return Some("CARGO_TARGET_TMPDIR is on tmpfs");
    }
    // SAFETY: a private anonymous page, advised and unmapped here.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let rc = libc::madvise(page, 4096, libc::MADV_PAGEOUT);
        libc::munmap(page, 4096);
        (rc != 0).then_some("the kernel has no MADV_PAGEOUT (Linux < 5.4)")
    }
}

#[test]
fn file_pages_touched_after_the_snapshot_are_paged_out_and_earlier_ones_stay() {
    const PAGES: usize = 1024;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Some(why) = unsupported(dir) {
        eprintln!("skipped: {why}");
        return;
    }
    let path = dir.join(format!("resident-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..PAGES * 4096).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    // Clean page-cache pages: dirty ones would need writing back before they can be reclaimed.
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: a fresh read-only private mapping of a file this test owns; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGES * 4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let base = map as usize;
    let touch = |pages: std::ops::Range<usize>| {
        pages
            // SAFETY: inside the mapping created above.
            .map(|p| unsafe { std::ptr::read_volatile((base + p * 4096) as *const u8) } as u64)
            .sum::<u64>()
    };
    // The kernel maps up to 16 neighbouring pages on a fault (fault-around), and the page cache
    // holds the file in folios of up to 2 MiB that are paged out whole, so the two touched ranges
    // are 64 KiB-aligned and in different 2 MiB halves of the file.
    const NEW: std::ops::Range<usize> = 768..784;
    touch(0..16);
    let snapshot = ResidentFiles::now(&[]);
    touch(NEW);
    let touched = resident(base, PAGES);
    assert!(touched[..16].iter().chain(&touched[NEW]).all(|&r| r));
    let advised = snapshot.page_out_new(&[]);
    let now = resident(base, PAGES);
    // SAFETY: the mapping created above, no longer used.
    unsafe { libc::munmap(map, PAGES * 4096) };
    let _ = std::fs::remove_file(&path);
    assert!(advised >= 16 * 4096, "advised {advised} bytes");
    assert!(
        now[..16].iter().all(|&r| r),
        "pages resident at the snapshot must stay: {:?}",
        &now[..16]
    );
    assert!(
        now[NEW].iter().all(|&r| !r),
        "pages touched after the snapshot must be paged out: {:?}",
        &now[NEW]
    );
}
